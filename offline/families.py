"""Families distilled by a sweep's trials: where their training rows come from (`training_rows`), what
shapes a family (`family_key`, hashed), and distilling one once per hash (`ensure_family`)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from bot.config import Config
from bot.core.errors import ConfigError

if TYPE_CHECKING:
    from bot.sim.backtest_cache import SymbolBars

#: `[regime]` keys the offline regime calibration reads (`offline.calibrate`, stored in the manifest): they
#: shape a distilled family too, so they are part of its hash.
CALIBRATION_KEYS: Final = (
    "vol_window",
    "trend_window",
    "volume_window",
    "vol_calm_quantile",
    "vol_volatile_quantile",
    "vol_crisis_quantile",
    "trend_calm_quantile",
)
#: Sub-directory of the sweep's `--out` holding the distilled families (`<hash>/`) and their training rows.
FAMILIES_DIR: Final = "models"


@dataclass(frozen=True, slots=True)
class FamilyPlan:
    """Where and from what a sweep's trials distil their families (built once by the driver).

    Attributes:
        root: `DIR/models`: families in `<hash>/`, the key that made each in `<hash>.json`.
        train_csv: the training rows (`training_rows`), a klines CSV.
        data_id: sha256 of `train_csv`'s bytes (the identity of the rows in the family hash).
        from_ms: the first decided bar of every trial of the sweep; the training rows all start before it.
        quick: distil with `[distill] quick_bars` / `quick_epochs`.
        symbol: the symbol of the training rows (recorded in the manifest's provenance).
        symbols: every symbol the trials decide (the family serves them all).
    """

    root: str
    train_csv: str
    data_id: str
    from_ms: int
    quick: bool
    symbol: str
    symbols: tuple[str, ...]


def cut_ms(series: Sequence[SymbolBars], *, interval: str, distill_frac: float) -> int:
    """The first decided bar time of a sweep that distils: `lo + distill_frac * (hi - lo + one bar)`,
    aligned down to the bar interval, where `lo`/`hi` are the first/last bar over all `series`.

    Raises:
        ConfigError: `distill_frac` not in (0, 1).
    """
    from bot.core.bars import interval_ms

    if not 0.0 < distill_frac < 1.0:
        raise ConfigError(f"distill_frac: expected a fraction in (0, 1), got {distill_frac}")
    step = interval_ms(interval)
    lo = min(s.bars[0].start_ms for s in series)
    hi = max(s.bars[-1].start_ms for s in series)
    return lo + int((hi - lo + step) * distill_frac) // step * step


def training_rows(
    series: Sequence[SymbolBars], root: Path, *, interval: str, distill_frac: float, quick: bool
) -> FamilyPlan:
    """Cut the data's time span (`cut_ms`): the first `distill_frac` of it trains families, the rest is
    decided.

    The training rows are the first series' bars with `start_ms < cut` (one family serves every symbol, as
    live; a distillation reads one series), written to `root/train_<symbol>.csv`. Every trial then decides
    bars from `cut` on only, so no fold, validation or held-out, holds a row the family was trained,
    validated or tested on (their targets end before `cut` too: the rows stop there).

    Raises:
        ConfigError: `distill_frac` not in (0, 1).
    """
    from offline.fetch import write_klines_csv  # the project's one klines writer

    cut = cut_ms(series, interval=interval, distill_frac=distill_frac)
    first = series[0]
    rows = [b for b in first.bars if b.start_ms < cut]
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"train_{first.symbol}.csv"
    write_klines_csv(rows, path)
    data_id = hashlib.sha256(path.read_bytes()).hexdigest()
    return FamilyPlan(
        root=str(path.parent.resolve()),
        train_csv=str(path.resolve()),
        data_id=data_id,
        from_ms=cut,
        quick=quick,
        symbol=first.symbol,
        symbols=tuple(s.symbol for s in series),
    )


def family_key(cfg: Config, plan: FamilyPlan) -> dict[str, Any]:
    """Everything that shapes a family distilled from `plan`'s rows under `cfg` (what its hash covers)."""
    from bot.core.features import FEATURE_VERSION

    return {
        "tiers": msgspec.to_builtins(cfg.tiers),
        "distill": msgspec.to_builtins(cfg.distill),
        "regime_calibration": {k: getattr(cfg.regime, k) for k in CALIBRATION_KEYS},
        "interval": cfg.market.interval,
        "feature_version": FEATURE_VERSION,
        "quick": plan.quick,
        "symbol": plan.symbol,
        "data": plan.data_id,
    }


def family_hash(key: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `key` (sorted keys, no spaces), first 16 hex digits."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def ensure_family(cfg: Config, plan: FamilyPlan) -> tuple[Path, dict[str, Any]]:
    """The family of `cfg`'s shaping keys: `plan.root/<hash>`, distilled now unless it is there already.

    A per-hash file lock (`fcntl.flock`) makes concurrent trials with the same keys distil once: the others
    wait and reuse it. `pipeline_distill` writes the directory atomically, so one with a manifest is whole.

    Returns:
        (family directory, {"family": hash, "distilled": True when distilled by this call, "distill_s"}).
    """
    import fcntl

    from bot.models.manifest import MANIFEST_NAME
    from offline.pipeline import pipeline_distill

    key = family_key(cfg, plan)
    h = family_hash(key)
    root = Path(plan.root)
    target = root / h
    t0 = time.perf_counter()
    with (root / f".{h}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        distilled = not (target / MANIFEST_NAME).is_file()
        if distilled:
            pipeline_distill(
                cfg,
                data=plan.train_csv,
                out_dir=target,
                quick=plan.quick,
                allow_gaps=True,
                symbol=plan.symbol,
            )
            write_atomic(root / f"{h}.json", json.dumps(key, indent=1, sort_keys=True) + "\n")
    return target, {"family": h, "distilled": distilled, "distill_s": time.perf_counter() - t0}


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling and a rename: a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
