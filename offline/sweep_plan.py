"""What a sweep will run, checked before any file is created or any Ray worker starts.

`plan` checks the options, every value of the grid (and every combination a grid search will run), the
data (read once: a missing or malformed CSV is a `DataError`), the fold count against the bars the trials
decide, a policy-only grid's `--models` and the output directory (`check_out`), and finds the earlier
trials a rerun resumes. Anything wrong raises a `ConfigError` / `DataError` (exit 2) or a `ModelError`
(exit 3) naming the option and the fix.

The output directory follows the one output policy (docs/errors.md, "Outputs"): a sweep reuses (resumes in)
`--out` only when it holds nothing but this sweep's own outputs - its marker (`bot.outputs.MARKER`, kind
"sweep") lists every file with the size it was written with; the trial families under `models/` and the
progress journal are recognised by their generated names - and only when the earlier trials were run with the
same fingerprint (base config, grid, data, models, folds, metric). A different fingerprint is refused unless
the user asked for `--fresh`, which replaces the earlier trials at the end of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bot.config import Config, dump_config
from bot.core.errors import ConfigError, DataError
from bot.outputs import MARKER, MIB, OutputPathError, listing
from bot.sim.backtest_cache import SymbolBars
from offline.grid import apply, grid_trials, shapes_models

METRICS: Final = ("sharpe", "pnl_usd")
SEARCHES: Final = ("grid", "optuna")
#: The fewest decided bars a fold may hold (a Sharpe over fewer is noise; over 0 it is 0.0 for every trial).
MIN_FOLD_BARS: Final = 20
#: Grid searches up to this many combinations have every combination validated up front.
MAX_CHECKED_COMBINATIONS: Final = 100_000
#: The sweep's own files in `--out` (besides the marker and the families directory).
OUTPUT_FILES: Final = ("trials.json", "trials.csv", "best.toml", "sweep.png")
#: Finished trials of a run that has not ended yet (written after every batch; read on resume).
JOURNAL: Final = ".trials.partial.json"
KIND: Final = "sweep"
#: Names the sweep writes under `--out` whose files are not all listed in the marker (they are written by
#: Ray workers or between two marker updates): trial families, their keys and locks, staging siblings,
#: the journal and atomic-write temporaries.
_GENERATED: Final = re.compile(
    "|".join(
        (
            r"models",  # the families directory (FAMILIES_DIR)
            r"models/train_[A-Z0-9]+\.csv",  # a sweep's training rows (`training_rows`)
            r"models/\.?[0-9a-f]{16}(\.json|\.lock)?",  # a family, its key, its lock
            r"models/[0-9a-f]{16}/.+",  # a family's files
            r"models/\.[^/]+\.tmp-[^/]+(/.+)?",  # a staged family or training CSV (`StagedOutput`)
            r"\.trials\.partial\.json",  # JOURNAL
            r"(models/)?\.[^/]+\.[a-z0-9_]{8}",  # a `write_atomic` temporary
        )
    ).join(("^(", ")$"))
)


def check_options(*, folds: int, metric: str, search: str, trials: int | None, num_cpus: int | None) -> None:
    """The sweep's scalar options (ConfigError naming the flag)."""
    if folds < 2:
        raise ConfigError(f"--folds: expected >= 2 (the last one is held out), got {folds}")
    if metric not in METRICS:
        raise ConfigError(f"--metric: expected one of {list(METRICS)}, got {metric!r}")
    if search not in SEARCHES:
        raise ConfigError(f"--search: expected one of {list(SEARCHES)}, got {search!r}")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: expected at least 1 trial, got {trials}")
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus: expected at least 1 CPU, got {num_cpus}")


def check_grid(base: Config, grid: Mapping[str, list[Any]], *, search: str) -> None:
    """Every value of every key, applied alone to `base`, must make a valid config; for a grid search (up to
    `MAX_CHECKED_COMBINATIONS`) so must every combination it will run."""
    for key, values in grid.items():
        for i, value in enumerate(values):
            try:
                apply(base, {key: value}, source="grid")
            except ConfigError as exc:
                raise ConfigError(f"--grid: {key}[{i}] = {value!r}: {exc}; fix or remove that value") from exc
    n = 1
    for values in grid.values():
        n *= len(values)
    if search != "grid" or n > MAX_CHECKED_COMBINATIONS:
        return
    for ov in grid_trials(grid):
        try:
            apply(base, ov, source="grid")
        except ConfigError as exc:
            raise ConfigError(f"--grid: the combination {json.dumps(ov)} is not a valid config: {exc}") from (
                exc
            )


def load_data(base: Config, data: Sequence[str]) -> list[SymbolBars]:
    """Read every `--data` CSV once (`SYMBOL=PATH` or `PATH`).

    Raises:
        DataError: a missing, unreadable or malformed CSV, or two files of one symbol.
    """
    from bot.core.bars import interval_ms
    from bot.sim.backtest_cache import load_symbol

    if not data:
        raise ConfigError("--data: at least one klines CSV is required")
    step = interval_ms(base.market.interval)
    series = [load_symbol(arg, interval_ms=step) for arg in data]
    names = [s.symbol for s in series]
    if len(set(names)) != len(names):
        raise DataError(f"--data: one CSV per symbol, got symbols {names}; name them SYMBOL=PATH")
    return series


def decided_bars(series: Sequence[SymbolBars], *, warmup_bars: int, from_ms: int | None) -> int:
    """How many distinct bar times the trials decide: after each file's `warmup_bars` and, in a sweep that
    distils, from `from_ms` on (DataError when a file has none left, as `bot backtest`)."""
    from bot.sim.backtest import window

    if warmup_bars < 0:
        raise ConfigError(f"--warmup-bars: expected an integer >= 0, got {warmup_bars}")
    times: set[int] = set()
    for s in series:
        w = window(s.bars, warmup_bars=warmup_bars, from_ms=from_ms, to_ms=None)
        times.update(b.start_ms for b in s.bars[w.first : w.hi])
    return len(times)


def check_folds(folds: int, decided: int) -> None:
    """Refuse more folds than the decided bars fill with `MIN_FOLD_BARS` each (--folds and the maximum)."""
    most = decided // MIN_FOLD_BARS
    if folds > most:
        fix = f"pass --folds {most} or fewer" if most >= 2 else "pass more data or lower --warmup-bars"
        raise ConfigError(
            f"--folds {folds}: the trials decide {decided} bars, which fill at most {most} folds of "
            f"{MIN_FOLD_BARS} bars; {fix}"
        )


def fingerprint(
    base: Config,
    grid: Mapping[str, list[Any]],
    series: Sequence[SymbolBars],
    models: str,
    *,
    folds: int,
    metric: str,
    family_id: str | None,
) -> str:
    """sha256 (16 hex digits) of what makes trials of two runs comparable: the base config, the grid (keys and
    candidates), each data file's bytes, the models' manifest (policy-only grid), folds and metric."""
    h = hashlib.sha256()
    parts = [dump_config(base), json.dumps(grid, sort_keys=True), str(folds), metric]
    parts += [f"{s.symbol}:{s.sha256}" for s in series]
    if family_id is None:
        manifest = Path(models) / "manifest.json"
        if not manifest.exists():
            manifest = Path(models) / "current" / "manifest.json"
        parts += [models, hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "?"]
    else:
        parts.append(family_id)
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Plan:
    """A sweep's checked inputs: the loaded `series`, the first decided bar `cut` of a sweep that distils
    (None: a policy-only grid), the `fingerprint` and the finished rows of earlier runs it resumes."""

    series: list[SymbolBars]
    cut: int | None
    fingerprint: str
    resumed: list[dict[str, Any]]


def plan(
    base: Config,
    grid: Mapping[str, list[Any]],
    data: Sequence[str],
    out: Path,
    *,
    models: str,
    search: str,
    trials: int | None,
    folds: int,
    metric: str,
    num_cpus: int | None,
    warmup_bars: int | None,
    distill_frac: float,
    distill_quick: bool,
    fresh: bool,
) -> Plan:
    """Every check of a sweep, in the order a user fixes them; reads the data, writes nothing (module
    docstring). ModelError: a policy-only grid's `models` does not load (manifest, hashes, ONNX)."""
    from bot.models.family import TierFamily
    from bot.sim.backtest_cache import parse_data_arg
    from offline.families import cut_ms

    check_options(folds=folds, metric=metric, search=search, trials=trials, num_cpus=num_cpus)
    check_grid(base, grid, search=search)
    check_out(out, protect=[parse_data_arg(d)[1] for d in data])
    series = load_data(base, data)
    cut = (
        cut_ms(series, interval=base.market.interval, distill_frac=distill_frac)
        if shapes_models(grid)
        else None
    )
    n_warm = base.exchange.backfill_bars if warmup_bars is None else warmup_bars
    check_folds(folds, decided_bars(series, warmup_bars=n_warm, from_ms=cut))
    if cut is None:
        TierFamily.load(models)
    family_id = None if cut is None else f"distil:{cut}:{distill_quick}:{distill_frac}"
    fp = fingerprint(base, grid, series, models, folds=folds, metric=metric, family_id=family_id)
    return Plan(series, cut, fp, earlier_rows(out, fp, fresh=fresh))


def _refuse(out: Path, why: str, fix: str = "choose a new or empty directory") -> OutputPathError:
    return OutputPathError(f"--out {out}: {why}; nothing was touched; {fix}")


def _marker(out: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def check_out(out: Path, *, protect: Sequence[Path], min_free_mib: int = 64) -> None:
    """Refuse an `--out` the sweep must not write into (OutputPathError, exit 2); touches nothing.

    Accepted: a missing or empty directory, or one holding only this sweep's marked outputs (module
    docstring). Refused: a file, a link, the current directory or a parent, a directory holding a `--data`
    CSV, anything else in it (the first such entry is named), a read-only or full filesystem.
    """
    real = Path(os.path.realpath(out))
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise _refuse(out, "is the current directory or one of its parents")
    for p in protect:
        rp = Path(os.path.realpath(p))
        if rp == real or real in rp.parents:
            raise _refuse(out, f"holds the input {p}", "write the output somewhere else")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise _refuse(out, "exists and is not a directory", "choose another path")
    if out.exists() and any(out.iterdir()):
        marker = _marker(out)
        if marker is None or marker.get("kind") != KIND or not isinstance(marker.get("files"), dict):
            what = f"no {MARKER} of a sweep" if marker is None else f"{MARKER} kind {marker.get('kind')!r}"
            raise _refuse(out, f"exists and was not written by offline sweep ({what})")
        written: dict[str, int] = marker["files"]
        for rel, size in listing(out).items():
            if written.get(rel) == size != -2 or _GENERATED.match(rel):
                continue
            raise _refuse(
                out,
                f"holds {rel!r}, which offline sweep did not write (or it changed since)",
                "move it out first, or choose a new or empty directory",
            )
    base = out
    while not base.exists():
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise _refuse(out, f"{base} is not a writable directory", "choose a writable location")
    free = shutil.disk_usage(base).free
    if free < min_free_mib * MIB:
        raise _refuse(out, f"only {free // MIB} MiB free in {base}, need {min_free_mib} MiB", "free space")


def earlier_rows(out: Path, fp: str, *, fresh: bool) -> list[dict[str, Any]]:
    """The finished (`ok`) trials of earlier runs in `out` (trials.json and an interrupted run's journal).

    Raises:
        OutputPathError: they were run with another fingerprint (grid, config, data, models, folds or
            metric) and `fresh` is off.
    """
    rows: list[dict[str, Any]] = []
    for name in ("trials.json", JOURNAL):
        try:
            got = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(got, list):
            rows.extend(r for r in got if isinstance(r, dict) and r.get("id") not in {x["id"] for x in rows})
    other = {str(r.get("fingerprint")) for r in rows} - {fp}
    if other and not fresh:
        raise _refuse(
            out,
            f"holds trials of another sweep (fingerprint {sorted(other)[0]}, this one {fp}: the grid, base "
            "config, data, --models, --folds or --metric differ)",
            "choose a new directory, or pass --fresh to replace its trials at the end of this run",
        )
    return [r for r in rows if r.get("fingerprint") == fp and r.get("status") == "ok"]


def write_marker(out: Path) -> None:
    """Record every file now in `out` as this sweep's own (called after each save)."""
    from offline.families import write_atomic

    files = {rel: size for rel, size in listing(out).items() if rel != JOURNAL}  # a run's scratch
    write_atomic(out / MARKER, json.dumps({"kind": KIND, "files": files}, indent=1) + "\n")
