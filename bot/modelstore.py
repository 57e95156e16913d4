"""The models directory: tier families side by side as versions, and an atomically swapped `current` pointer.

    <models dir>/
        20261202T101500Z-3f9c1a2b/   manifest.json + ONNX files (one version, never modified in place)
        20261203T031500Z-8e77d0c4/
        current -> 20261203T031500Z-8e77d0c4      (a relative symlink, replaced with os.replace)

`resolve(dir)` is the family directory to load: `dir/current` when it exists, else `dir` itself when it
holds a manifest (the plain layout of older releases still loads). `promote(dir, version)` makes a version
current in one atomic rename, so a reader sees the old family or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Final

from bot.core.errors import ModelError

CURRENT: Final = "current"
MANIFEST: Final = "manifest.json"


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
        if p.name != CURRENT and not p.is_symlink() and (p / MANIFEST).is_file()
    )


def promote(models_dir: str | Path, version: str) -> None:
    """Point `current` at `version` atomically (a temporary symlink renamed over the old one)."""
    root = Path(models_dir)
    if not (root / version / MANIFEST).is_file():
        raise ModelError(f"{root / version}: not a complete version (no {MANIFEST}); nothing promoted")
    tmp = root / f".{CURRENT}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(version, tmp)
    os.replace(tmp, root / CURRENT)
