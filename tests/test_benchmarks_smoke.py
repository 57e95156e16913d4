"""Every benchmark script runs: `--smoke` (tiny sizes, seconds, no speed assertion) in a subprocess.

Scripts are found by glob, so a new `benchmarks/*.py` or `*.sh` without `--smoke` (or without an entry in
`TABLES`) fails here. `benchmarks/_*.py` are helpers, not scripts. Each run gets TMPDIR and the working
directory in the test's tmp dir, so its outputs (and any synthetic stand-in for ../shared/data) land there;
the results committed in docs/ must be untouched afterwards. The scripts that take `--models` share one
tiny family.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(
    p.name for p in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("*.sh")] if not p.name.startswith("_")
)

#: A line of each script's printed table (its header, or a row every run prints).
TABLES: dict[str, str] = {
    "backtest_kernels.py": "| figure | kernels s | kernels bars/s | per-bar path s |",
    "bench_ledger.py": "synchronous=normal record p50",
    "bench_ledger_shadow.py": "re-seed from 4 x",
    "burst.py": "| figure | batched (item 3) | one at a time (baseline) | ratio | target |",
    "decision_line.py": "p50 vs structlog",
    "distill_study.py": "| size | compr | variant |",
    "drift.py": "calibrated: after",
    "fault_schedules.py": "20 symbol(s) on [3] connection(s)",
    "feed_throughput.py": '"bench": "reconnect"',
    "kernels.py": "| T-loop (offline feature building) | bars/s | vs oracle |",
    "kernels_policy.py": "| T-loop, policy-only pass over cached predictions | bars/s | vs oracle |",
    "latency.py": "bar -> decision in-process",
    "mlp_forward.py": "| tier | shape | inputs | mult-adds | served |",
    "mutation.sh": "killed = 50.0%",
    "regime_confusion.py": "true/detected",
    "reload_bench.py": "target: 0 missed/doubled/mixed",
    "routing_study.py": "# Routing study",
    "shadow_cost.py": "after_decision_us_p50",
    "soak.py": "rss end",
    "startup_scale.py": "| symbols x bars | ready s | connections |",
    "teacher_shapes.py": "QLIKE bc",
    "throughput.py": "ws decode+dispatch bot_wire_msgspec",
    "train_scale.py": "| symbols x days | rows | build s | build rows/s |",
    "vol_study.py": "# Volatility head: walk-forward study (smoke)",
}
#: Scripts that take a tier family: they get the shared tiny one instead of distilling their own.
TAKES_MODELS = {"burst.py", "latency.py", "shadow_cost.py", "throughput.py"}


def _results_in_docs() -> dict[str, int]:
    """The committed results (JSON and plots; prose .md is edited by hand) in docs/, with their mtimes."""
    files = [*(REPO / "docs").rglob("*.json"), *(REPO / "docs").rglob("*.png")]
    return {str(p.relative_to(REPO)): p.stat().st_mtime_ns for p in files}


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tier family of benchmarks/_smoke.py, distilled once for the scripts that take `--models`."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _smoke import tiny_family as build
    finally:
        sys.path.remove(str(BENCHMARKS))
    family: Path = build(tmp_path_factory.mktemp("bench_family") / "models")
    return family


def test_every_script_has_a_table_line() -> None:
    """Each benchmark found by glob has its expected table line here (and no stale entries are left)."""
    assert set(TABLES) == set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run(script: str, tmp_path: Path, tiny_family: Path) -> None:
    """`benchmarks/<script> --smoke` exits 0, prints its table and writes no results into docs/."""
    path = BENCHMARKS / script
    cmd = ["bash", str(path)] if script.endswith(".sh") else [sys.executable, str(path)]
    cmd.append("--smoke")
    if script in TAKES_MODELS:
        cmd += ["--models", str(tiny_family)]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    before = _results_in_docs()
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170, check=False
    )
    tail = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script} --smoke exited {proc.returncode}{tail}"
    assert TABLES.get(script, "<no TABLES entry>") in proc.stdout, f"{script}: no table printed{tail}"
    assert _results_in_docs() == before, f"{script} --smoke wrote results into docs/"
