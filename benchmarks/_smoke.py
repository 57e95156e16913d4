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
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from bot.config import Config

REPO = Path(__file__).resolve().parents[1]

SMOKE_HELP = "tiny sizes, seconds: proves the script runs; outputs go to a temporary directory (or --out)"

#: (layers, width) of the tiny family's tiers, largest first like the default [tiers] (tests/support.py's).
TINY_SHAPES = ((3, 24), (2, 16), (2, 12), (1, 8))

#: Bars per symbol of the synthetic stand-in for ../shared/data when it is absent.
SYNTHETIC_BARS = 6_000


def smoke_dir(name: str) -> Path:
    """A fresh directory under $TMPDIR for one smoke run's outputs."""
    return Path(tempfile.mkdtemp(prefix=f"bench_smoke_{name}_"))


def output_path(given: Path | None, name: str, suffix: str = "", *, smoke: bool, quick: bool) -> Path:
    """Where a run writes: `given` when set; else `{name}_smoke{suffix}` in a fresh temporary directory for a
    smoke run, `docs/results/{name}_quick{suffix}` for a quick run, `docs/results/{name}{suffix}` for a full
    one. A `suffix`
    of "" gives a stem that the caller completes (`.json`, `.png`)."""
    if given is not None:
        return given
    if smoke:
        return smoke_dir(name) / f"{name}_smoke{suffix}"
    return REPO / "docs" / "results" / f"{name}{'_quick' if quick else ''}{suffix}"


def tiny_config() -> Config:
    """The default config with tiny tiers (the same feature sets, so a service or engine on `Config()` accepts
    the family) and a small quick-distillation budget (6,000 bars, 3 epochs)."""
    from bot.config import Config

    base = Config()
    tiers = {
        name: msgspec.structs.replace(tier, layers=layers, width=width)
        for (name, tier), (layers, width) in zip(base.tiers.items(), TINY_SHAPES, strict=True)
    }
    distill = msgspec.structs.replace(base.distill, quick_bars=6_000, quick_epochs=3, embargo_bars=10)
    return msgspec.structs.replace(base, tiers=tiers, distill=distill)


def tiny_config_file(directory: Path) -> Path:
    """`tiny_config` as `directory/config.toml`, for scripts that take `--config`; returns its path."""
    from bot.config import dump_config

    path = directory / "config.toml"
    path.write_text(dump_config(tiny_config()), encoding="utf-8")
    return path


def tiny_family(out: Path) -> Path:
    """A tiny real tier family (the offline pipeline's quick distillation of the synthetic market with
    `tiny_config`, a few seconds) written to `out`; returns `out`."""
    from offline.pipeline import pipeline_distill

    pipeline_distill(tiny_config(), data="synthetic", out_dir=out, quick=True)
    return out


def data_or_synthetic(
    data_dir: Path, symbols: Sequence[str], *, interval: str = "5", last_bars: int | None = None
) -> Path:
    """`data_dir` when it holds `{symbol}_{interval}m.csv` for every symbol (with `last_bars`: a temporary
    directory holding the header and last `last_bars` rows of each); otherwise a temporary directory holding
    a synthetic market's klines under the same names (one seed per symbol, `last_bars` or `SYNTHETIC_BARS`
    bars)."""
    names = [f"{s}_{interval}m.csv" for s in symbols]
    if all((data_dir / n).is_file() for n in names):
        if last_bars is None:
            return data_dir
        out = smoke_dir("data")
        for name in names:
            header, *rows = (data_dir / name).read_bytes().splitlines(keepends=True)
            (out / name).write_bytes(b"".join([header, *rows[-last_bars:]]))
        return out
    from bot.sim.synthetic import SyntheticMarket
    from offline.fetch import write_klines_csv

    out = smoke_dir("data")
    for seed, (symbol, name) in enumerate(zip(symbols, names, strict=True)):
        market = SyntheticMarket(seed=seed, symbol=symbol, interval=interval)
        write_klines_csv([s.bar for s in market.generate(last_bars or SYNTHETIC_BARS)], out / name)
    print(f"smoke: {data_dir} has no {', '.join(names)}; using a synthetic market in {out}", file=sys.stderr)
    return out
