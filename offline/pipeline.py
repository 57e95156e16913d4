"""The whole offline run as one function: data -> distillation -> export -> report, written atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from bot.config import Config
from bot.core.errors import ModelError
from bot.interrupts import deferred
from bot.models import store as modelstore
from bot.models.manifest import MANIFEST_NAME, decode_manifest
from bot.outputs import MARKER, OutputPathError, StagedOutput
from offline import interrupts
from offline.data import load_sources
from offline.distill import run_distillation
from offline.export import export_family, write_json
from offline.report import build_report, format_table, plot_report


def pipeline_distill(
    cfg: Config,
    *,
    data: str | Path | Sequence[str | Path] = "synthetic",
    out_dir: str | Path,
    quick: bool = False,
    seed: int | None = None,
    allow_gaps: bool = False,
    drop_last: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    symbol: str | Sequence[str] | None = None,
    versioned: bool = False,
    promote: bool = True,
) -> dict[str, Any]:
    """Distill the tier family from `data` into `out_dir`; returns the report (also `report.json`).

    Args:
        cfg: validated config; `[tiers]` (largest first) and `[distill]` drive the run.
        data: "synthetic" (the seeded SyntheticMarket) or a klines CSV path; a list of several CSV paths
            (one symbol each, one interval) trains one family on all of them (`offline.data.load_pooled`).
        out_dir: receives `manifest.json`, `<tier>.onnx` per tier, `report.json`, `report.txt`, `report.png`.
            Written into a temporary sibling directory and renamed into place at the end, so a failed or
            interrupted run leaves `out_dir` untouched. An existing `out_dir` is replaced only on success and
            only when it is empty or a tier family (`family_reason`); anything else is refused before any work
            (`bot.outputs.StagedOutput`).
        quick: `quick_bars` bars (synthetic; the last `quick_bars` rows of a CSV) and `quick_epochs` epochs.
        seed: training seed (None = `cfg.distill.seed`).
        allow_gaps: accept time gaps in a CSV.
        drop_last: drop a CSV's last row (a Bybit download's still-open candle).
        progress: show a tqdm bar per stage (stderr).
        log: receives one human-readable line per stage.
        symbol: the symbol a CSV holds, recorded in the manifest's provenance (None: not recorded; the file
            name is never guessed from); with several `data` files, a list of one symbol per file.
        versioned: `out_dir` is a models store (`bot.models.store`): the family becomes a new version
            `out_dir/<UTC time>-<manifest sha>/` (never written over) and, with `promote`, the current one
            (atomic swap of `out_dir/current`). A plain family already in `out_dir` stays where it is.
        promote: make the new version current (`offline distill --no-promote` only adds it).

    Raises:
        DataError, ModelError, ConfigError: bad data, failed ONNX parity, bad tiers; nothing is written.
        OutputPathError: `out_dir` must not be replaced or cannot be written; raised before any work.
    """
    dc = cfg.distill
    run_seed = dc.seed if seed is None else seed
    if seed is not None:
        cfg = msgspec.structs.replace(cfg, distill=msgspec.structs.replace(dc, seed=seed))
        dc = cfg.distill
    epochs = dc.quick_epochs if quick else dc.epochs
    n_bars = dc.quick_bars if quick else None
    t0 = time.perf_counter()
    sources: list[str | Path] = [data] if isinstance(data, str | Path) else list(data)
    protect = [d for d in sources if str(d) != "synthetic"]
    store = Path(out_dir)
    if versioned:
        why = store_reason(store)
        if why is not None:
            raise OutputPathError(f"--out {store}: {why}; nothing was touched; choose a models directory")
        out_dir = store / f".incoming-{os.getpid()}-{time.time_ns()}"
    created = versioned and not store.exists()
    try:
        stage = StagedOutput(
            out_dir, kind="tier-family", protect=protect, recognise=family_reason, min_free_mib=64, mark=False
        )
        with stage as tmp:  # refuses a foreign out_dir and checks writability before any work
            interrupts.phase("data", "reading the data")
            ds = load_sources(
                sources, dc, symbol=symbol, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last
            )
            data_s = time.perf_counter() - t0
            interrupts.phase("training", "training")
            result = run_distillation(
                ds, cfg.tiers, dc, epochs=epochs, seed=run_seed, progress=progress, log=log
            )
            result.info["quick"] = quick
            result.info["dataset_s"] = data_s
            interrupts.phase("export", "exporting the tiers to ONNX and writing the report")
            manifest = export_family(result, ds, cfg, tmp)
            result.info["total_s"] = time.perf_counter() - t0
            report = build_report(result, manifest)
            write_json(tmp / "report.json", report)
            table = format_table(report)
            (tmp / "report.txt").write_text(table + "\n", encoding="utf-8")
            prov = ds.provenance
            who = prov.get("symbol") or "+".join(map(str, prov.get("symbols") or ["pooled"]))
            title = f"{who} {prov.get('interval')}m, {ds.n_rows} rows ({prov.get('source')})"
            plot_report(report, tmp / "report.png", title=title)
            # retrain distils with promote=False and promotes later itself: its "promote" is that one
            step = "promote" if promote or not versioned else "add-version"
            interrupts.phase(
                step, "adding the version to the store" if versioned else "swapping in the family"
            )
            if not versioned:
                stage.commit()
            else:
                report.update(_add_version(stage, store, Path(out_dir), promote=promote))
    except BaseException:
        if created and store.is_dir() and not any(store.iterdir()):
            store.rmdir()  # a failed first run leaves no empty models directory behind
        raise
    report["table"] = table
    return report


def _add_version(stage: StagedOutput, store: Path, incoming: Path, *, promote: bool) -> dict[str, Any]:
    """Swap the staged family in as a new version of `store` and (with `promote`) make it current, as one
    step: a signal meanwhile is held back and then undoes it (the new version is removed, `current` and
    `.previous` point where they did), so an interrupted run leaves the store as it was."""
    cur, prev = modelstore.current_version(store), modelstore.previous_version(store)
    version: str | None = None
    try:
        with deferred():
            stage.commit()
            sha = hashlib.sha256((incoming / MANIFEST_NAME).read_bytes()).hexdigest()
            version = modelstore.version_name(sha)
            os.rename(incoming, store / version)
            if promote:
                modelstore.promote(store, version)
    except BaseException:
        modelstore.restore_pointers(store, cur, prev)
        for path in (incoming, store / (version or incoming.name)):
            shutil.rmtree(path, ignore_errors=True)
        raise
    return {"version": version, "promoted": promote}


def store_reason(path: Path) -> str | None:
    """None when `path` can take a new version: missing, empty, a versioned store, or a plain family (whose
    files stay beside the versions); else why not."""
    if not path.exists():
        return None
    if not path.is_dir():
        return "exists and is not a directory"
    broken = modelstore.pointer_problem(path)
    if broken is not None:
        return broken
    plain: set[str] = set()
    if (path / MANIFEST_NAME).is_file():
        try:
            manifest = decode_manifest((path / MANIFEST_NAME).read_bytes(), path=path / MANIFEST_NAME)
        except ModelError:
            return f"holds an unreadable {MANIFEST_NAME}"
        plain = set(FAMILY_EXTRAS) | {t.file for t in manifest.tiers}
    for p in path.iterdir():
        if p.name in plain or p.name == modelstore.CURRENT or p.name.startswith("."):
            continue
        if p.is_dir() and (p / MANIFEST_NAME).is_file():
            continue
        return f"holds {p.name!r}, which is not a tier-family version"
    return None


FAMILY_EXTRAS = frozenset({MANIFEST_NAME, "report.json", "report.txt", "report.png", MARKER})


def family_reason(path: Path) -> str | None:
    """None when the directory `path` holds a tier family and nothing else (what `pipeline_distill` wrote),
    else why it is not one."""
    try:
        manifest = decode_manifest((path / MANIFEST_NAME).read_bytes(), path=path / MANIFEST_NAME)
    except (OSError, ModelError):
        return f"exists and is not a tier family (no readable {MANIFEST_NAME})"
    known = FAMILY_EXTRAS | {t.file for t in manifest.tiers}
    foreign = sorted(p.name for p in path.iterdir() if p.name not in known)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return f"holds files that are not part of its tier family ({shown})"
    return None
