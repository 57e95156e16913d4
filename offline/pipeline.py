"""The whole offline run as one function: data -> distillation -> export -> report, written atomically."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from bot.config import Config
from bot.core.errors import ModelError
from bot.manifest import MANIFEST_NAME, decode_manifest
from bot.outputs import MARKER, StagedOutput
from offline.data import load_dataset
from offline.distill import run_distillation
from offline.export import export_family, write_json
from offline.report import build_report, format_table, plot_report


def pipeline_distill(
    cfg: Config,
    *,
    data: str | Path = "synthetic",
    out_dir: str | Path,
    quick: bool = False,
    seed: int | None = None,
    allow_gaps: bool = False,
    drop_last: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    symbol: str | None = None,
) -> dict[str, Any]:
    """Distill the tier family from `data` into `out_dir`; returns the report (also `report.json`).

    Args:
        cfg: validated config; `[tiers]` (largest first) and `[distill]` drive the run.
        data: "synthetic" (the seeded SyntheticMarket) or a klines CSV path.
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
            name is never guessed from).

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
    protect = [] if str(data) == "synthetic" else [data]
    stage = StagedOutput(
        out_dir, kind="tier-family", protect=protect, recognise=family_reason, min_free_mib=64, mark=False
    )
    with stage as tmp:  # refuses a foreign out_dir and checks writability before any work
        ds = load_dataset(data, dc, n_bars=n_bars, allow_gaps=allow_gaps, drop_last=drop_last, symbol=symbol)
        data_s = time.perf_counter() - t0
        result = run_distillation(ds, cfg.tiers, dc, epochs=epochs, seed=run_seed, progress=progress, log=log)
        result.info["quick"] = quick
        result.info["dataset_s"] = data_s
        manifest = export_family(result, ds, cfg, tmp)
        result.info["total_s"] = time.perf_counter() - t0
        report = build_report(result, manifest)
        write_json(tmp / "report.json", report)
        table = format_table(report)
        (tmp / "report.txt").write_text(table + "\n", encoding="utf-8")
        prov = ds.provenance
        title = f"{prov.get('symbol')} {prov.get('interval')}m, {ds.n_rows} rows ({prov.get('source')})"
        plot_report(report, tmp / "report.png", title=title)
        stage.commit()
    report["table"] = table
    return report


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
