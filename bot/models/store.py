"""The models directory: tier families side by side as versions, and an atomically swapped `current` pointer.

    <models dir>/
        20261202T101500Z-3f9c1a2b/   manifest.json + ONNX files (one version, never modified in place)
        20261203T031500Z-8e77d0c4/
        current -> 20261203T031500Z-8e77d0c4      (a relative symlink, replaced with os.replace)
        .previous -> 20261202T101500Z-3f9c1a2b    (the version current pointed to before the last promote)

`resolve(dir)` is the family directory to load: `dir/current` when it exists, else `dir` itself when it
holds a manifest (the plain layout of older releases still loads). `promote(dir, version)` makes a version
current in one atomic rename, so a reader sees the old family or the new one, never a mix.
`prune(dir, keep)` deletes versions older than the newest `keep`, never `current` nor `.previous`; a victim
is first renamed to a hidden `.trash-<name>` (no longer a version to any reader), then removed.
Names starting with `.` (staging, trash, pointers) are never versions. `describe(dir)` is what
`python -m offline models list` prints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Final

from bot.core.errors import ModelError

CURRENT: Final = "current"
PREVIOUS: Final = ".previous"
TRASH_PREFIX: Final = ".trash-"
MANIFEST: Final = "manifest.json"
RETRAIN_REPORT: Final = "retrain.json"  # offline.retrain.REPORT_JSON: the verdict in a challenger's directory


def resolve(models_dir: str | Path) -> Path:
    """The directory of the family to load (see the module docstring)."""
    root = Path(models_dir)
    pointer = root / CURRENT
    if pointer.is_symlink() or pointer.exists():
        target = pointer.resolve()
        if not (target / MANIFEST).is_file():
            raise ModelError(
                f"{pointer}: points to {target}, which holds no {MANIFEST}; promote a complete version "
                "(python -m offline distill --out DIR) or fix the link"
            )
        return target
    return root


def current_version(models_dir: str | Path) -> str | None:
    """The name of the current version, or None for a plain (unversioned) family directory."""
    pointer = Path(models_dir) / CURRENT
    return os.readlink(pointer) if pointer.is_symlink() else None


def previous_version(models_dir: str | Path) -> str | None:
    """The version `current` pointed to before the last `promote` that changed it, or None (never promoted
    over, or promoted by hand)."""
    pointer = Path(models_dir) / PREVIOUS
    return os.readlink(pointer) if pointer.is_symlink() else None


def pointer_problem(models_dir: str | Path) -> str | None:
    """Why the store's `current` / `.previous` cannot be re-pointed, or None: a real directory or file
    instead of a link (a copy made by a tool that follows links, such as `scp -r`). Names the fix."""
    root = Path(models_dir)
    for name in (CURRENT, PREVIOUS):
        p = root / name
        if p.exists() and not p.is_symlink():
            fix = (
                f"rename it to a version name (mv {p} {root}/<UTC time>-copy) and run "
                f"`python -m offline models --dir {root} promote VERSION`"
                if name == CURRENT
                else f"remove it (rm -r {p}); it only remembers the version before the last promote"
            )
            return f"{p} is a real {'directory' if p.is_dir() else 'file'}, not a link to a version; {fix}"
    return None


def dangling_current(models_dir: str | Path) -> str | None:
    """A warning when `current` links to a missing or incomplete version (naming the fix), else None."""
    root = Path(models_dir)
    pointer = root / CURRENT
    if pointer.is_symlink() and not (pointer / MANIFEST).is_file():
        return (
            f"{pointer} points to {os.readlink(pointer)!r}, which is not a complete version; "
            f"run `python -m offline models --dir {root} promote VERSION` (see `models list`)"
        )
    return None


def version_name(manifest_sha256: str, *, now: dt.datetime | None = None) -> str:
    """A new version's directory name: UTC time and the manifest's sha256 prefix."""
    t = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{t}-{manifest_sha256[:8]}"


def versions(models_dir: str | Path) -> list[str]:
    """Version directories (those holding a manifest), oldest first by name."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.name != CURRENT
        and not p.name.startswith(".")
        and not p.is_symlink()
        and (p / MANIFEST).is_file()
    )


def promote(models_dir: str | Path, version: str) -> None:
    """Point `current` at `version` atomically (a temporary symlink renamed over the old one); the version it
    pointed to before is remembered as `.previous` (kept by `prune`, the first candidate for a roll back)."""
    root = Path(models_dir)
    if version.startswith(".") or version != Path(version).name or not (root / version / MANIFEST).is_file():
        raise ModelError(f"{root / version}: not a complete version (no {MANIFEST}); nothing promoted")
    old = current_version(root)
    if old is not None and old != version:
        _point(root, PREVIOUS, old)  # first: a crash between the two renames leaves both pointers valid
    _point(root, CURRENT, version)


def restore_pointers(models_dir: str | Path, current: str | None, previous: str | None) -> None:
    """Put `current` and `.previous` back to what they were (`current_version` / `previous_version` read
    before a promote; None: no such link), e.g. when a run is interrupted during its promote."""
    root = Path(models_dir)
    for name, target in ((CURRENT, current), (PREVIOUS, previous)):
        if target is not None:
            _point(root, name, target)
        elif (root / name).is_symlink():
            (root / name).unlink()


def _point(root: Path, name: str, target: str) -> None:
    tmp = root / f".{name.lstrip('.')}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, root / name)


def prune(models_dir: str | Path, keep: int, *, dry_run: bool = False) -> list[str]:
    """Delete the versions older than the newest `keep` (by name, i.e. by creation time), except the
    `current` one and the `.previous` one; returns the deleted (with `dry_run`: the would-be deleted)
    names, oldest first. Only complete version directories (`versions`) are candidates.

    Safe against a reader: a victim is renamed to `.trash-<name>` first (from then on it is no version to
    anyone), then removed; one that became current or previous meanwhile is renamed back and kept.
    `.trash-*` left by an interrupted prune are removed first.

    Raises:
        ValueError: `keep` < 1.
        OSError: a rename or removal failed (what was deleted before stays deleted).
    """
    if keep < 1:
        raise ValueError(f"keep: expected at least 1 version to keep, got {keep}")
    root = Path(models_dir)
    names = versions(root)
    protected = {current_version(root), previous_version(root)}
    victims = [v for v in names[: max(len(names) - keep, 0)] if v not in protected]
    if dry_run:
        return victims
    for p in root.iterdir():
        if p.name.startswith(TRASH_PREFIX) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
    deleted: list[str] = []
    for name in victims:
        trash = root / f"{TRASH_PREFIX}{name}"
        os.rename(root / name, trash)
        if name in {current_version(root), previous_version(root)}:  # promoted in the meantime
            os.rename(trash, root / name)
            continue
        shutil.rmtree(trash)
        deleted.append(name)
    return deleted


def describe(models_dir: str | Path, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One dict per version, oldest first: `version`, `current`, `previous`, `created_ms` (the manifest's,
    else the directory's mtime), `age_s`, `manifest_sha256`, `tiers`, `symbols` (None: not recorded),
    `retrain` (the retrain verdict in the version's `retrain.json`: `outcome`, `verdict`; None without
    one) and `error` (None, or why the manifest could not be read)."""
    root = Path(models_dir)
    now_ms = int((now or dt.datetime.now(dt.UTC)).timestamp() * 1000)
    cur, prev = current_version(root), previous_version(root)
    out: list[dict[str, Any]] = []
    for name in versions(root):
        vdir = root / name
        row: dict[str, Any] = {"version": name, "current": name == cur, "previous": name == prev}
        row.update(_manifest_info(vdir))
        if not row["created_ms"]:
            row["created_ms"] = int(vdir.stat().st_mtime * 1000)
        row["age_s"] = max(now_ms - row["created_ms"], 0) // 1000
        row["retrain"] = _retrain_verdict(vdir / RETRAIN_REPORT)
        out.append(row)
    return out


def _manifest_info(vdir: Path) -> dict[str, Any]:
    from bot.models.manifest import decode_manifest  # manifest decoding is only needed to describe a store

    info: dict[str, Any] = {"created_ms": 0, "manifest_sha256": None, "tiers": [], "symbols": None}
    path = vdir / MANIFEST
    try:
        raw = path.read_bytes()
        info["manifest_sha256"] = hashlib.sha256(raw).hexdigest()
        manifest = decode_manifest(raw, path=path)
    except (OSError, ModelError) as exc:
        info["error"] = str(exc) if isinstance(exc, ModelError) else f"{path}: {exc.strerror}"
        return info
    prov = manifest.provenance
    symbols = prov.get("symbols") or ([prov["symbol"]] if prov.get("symbol") else None)
    info.update(
        created_ms=manifest.created_ms,
        tiers=[t.name for t in manifest.tiers],
        symbols=[str(s) for s in symbols] if isinstance(symbols, list) else None,
        error=None,
    )
    return info


def _retrain_verdict(path: Path) -> dict[str, Any] | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"outcome": "unreadable", "verdict": f"{path}: {exc}"}
    if not isinstance(report, dict):
        return {"outcome": "unreadable", "verdict": f"{path}: not a JSON object"}
    return {"outcome": report.get("outcome"), "verdict": report.get("verdict")}
