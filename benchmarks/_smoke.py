"""What every benchmark's `--smoke` mode shares (a helper module, not a benchmark: no `--smoke` of its own).

A smoke run proves a documented command still runs: tiny sizes, a few seconds, no speed assertion, and its
outputs go to a fresh temporary directory (or the `--out` it is given), never over the results in docs/.
tests/test_benchmarks_smoke.py runs every `benchmarks/*.py` but this one with `--smoke`.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SMOKE_HELP = "tiny sizes, seconds: proves the script runs; outputs go to a temporary directory (or --out)"

#: Bars per symbol of the synthetic stand-in for ../shared/data when it is absent.
SYNTHETIC_BARS = 6_000


def smoke_dir(name: str) -> Path:
    """A fresh directory under $TMPDIR for one smoke run's outputs."""
    return Path(tempfile.mkdtemp(prefix=f"bench_smoke_{name}_"))


def output_path(given: Path | None, name: str, suffix: str = "", *, smoke: bool, quick: bool) -> Path:
    """Where a run writes: `given` when set; else `{name}_smoke{suffix}` in a fresh temporary directory for a
    smoke run, `docs/{name}_quick{suffix}` for a quick run, `docs/{name}{suffix}` for a full one. A `suffix`
    of "" gives a stem that the caller completes (`.json`, `.png`)."""
    if given is not None:
        return given
    if smoke:
        return smoke_dir(name) / f"{name}_smoke{suffix}"
    return REPO / "docs" / f"{name}{'_quick' if quick else ''}{suffix}"


def tiny_family(out: Path) -> Path:
    """A tiny real tier family (the tests' `trained_family`: the offline pipeline's quick distillation of the
    synthetic market with tests/support.py's small tiers, ~3 s) written to `out`; returns `out`."""
    sys.path.insert(0, str(REPO / "tests"))
    from support import small_config

    from offline.pipeline import pipeline_distill

    pipeline_distill(small_config(), data="synthetic", out_dir=out, quick=True)
    return out


def data_or_synthetic(data_dir: Path, symbols: Sequence[str], *, interval: str = "5") -> Path:
    """`data_dir` when it holds `{symbol}_{interval}m.csv` for every symbol; otherwise a temporary directory
    holding a synthetic market's klines under the same names (one seed per symbol, `SYNTHETIC_BARS` bars)."""
    names = [f"{s}_{interval}m.csv" for s in symbols]
    if all((data_dir / n).is_file() for n in names):
        return data_dir
    from bot.sim.synthetic import SyntheticMarket
    from offline.fetch import write_klines_csv

    out = smoke_dir("data")
    for seed, (symbol, name) in enumerate(zip(symbols, names, strict=True)):
        market = SyntheticMarket(seed=seed, symbol=symbol, interval=interval)
        write_klines_csv([s.bar for s in market.generate(SYNTHETIC_BARS)], out / name)
    print(f"smoke: {data_dir} has no {', '.join(names)}; using a synthetic market in {out}", file=sys.stderr)
    return out
