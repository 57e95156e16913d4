"""Output safety for every command that writes (`offline distill`/`fetch`, `bot demo`, `latency-report`).

A command stages its output in a fresh temporary sibling (`.<name>.tmp-XXXX` next to the target) and swaps it
into place only at the end (`StagedOutput.commit`, which SIGINT/SIGTERM cannot cut in half); a failure or an
interrupt removes the sibling and leaves the target as it was.

The policy (docs/errors.md, "Outputs"): an existing directory is reused only when it holds nothing but this
command's own marked outputs - it is empty, or its marker (`MARKER`, written at commit) is of the same kind
and lists every file in it, each with the size it was written with - or when `recognise` accepts it (a tier
family with its manifest, a klines CSV). A file the command did not write is never deleted or overwritten:
a directory of the user's files, a previous output the user has since put a file into (or edited), a regular
file, the directory holding an input, `.`, the current directory or one of its parents are all refused by
`StagedOutput.check` before any work, with `OutputPathError` (a `ConfigError`: exit 2) naming the path, the
file and the fix. Writability (by creating the sibling) and free space are checked up front too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from bot.core.errors import ConfigError
from bot.interrupts import deferred

MARKER: Final = ".progdistill-output.json"
MIB: Final = 1 << 20


class OutputPathError(ConfigError):
    """An output path this command must not (or cannot) write: refused before any work, nothing touched."""


def _read_marker(path: Path) -> dict[str, object] | None:
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def listing(root: Path) -> dict[str, int]:
    """Every entry below the directory `root` but the marker: relative POSIX path -> size in bytes (-1 for a
    directory, -2 for anything else: a link, a socket)."""
    entries: dict[str, int] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel == MARKER:
            continue
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            entries[rel] = -2
        else:
            entries[rel] = -1 if p.is_dir() else p.stat().st_size
    return entries


def foreign_entry(root: Path, written: dict[str, int]) -> str | None:
    """The first entry below `root` that is not in `written` (what the command wrote, see `listing`) or
    differs in size from it; None when there is none."""
    for rel, size in listing(root).items():
        if written.get(rel) != size or size == -2:
            return rel
    return None


def file_target_reason(path: Path) -> str | None:
    """Why a file cannot be created or appended to at `path` (the service's ledger and decision log), or None
    when it can: it is a directory, a parent is a file, or the directory is not writable. Creates nothing."""
    if path.is_dir():
        return "is a directory"
    base = path if path.exists() else path.parent
    while not base.exists():
        base = base.parent
    if not (base.is_dir() or path.exists()):
        return f"{base} is not a directory"
    if not os.access(base, os.W_OK):
        return f"{base} is not writable"
    return None


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


class StagedOutput:
    """Write into a temporary sibling of `target`, then swap it in; see the module docstring.

    Args:
        target: the output path (a directory, or a file when `is_file`).
        kind: what the command writes ("tier-family", "demo", ...); recorded in the marker of a directory.
        flag: the option that named `target` (for messages), e.g. "--out".
        protect: inputs the output must neither be, nor contain (e.g. the --data CSV).
        recognise: accepts an existing non-empty `target` this project wrote without a marker; returns None
            when it is ours, else the reason it is not.
        min_free_mib: free space the target's filesystem must have.
        is_file: `target` is one file (staged as the only entry of the sibling directory).
        mark: write the marker into a directory output (off when `recognise` knows the output by itself).
    """

    def __init__(
        self,
        target: str | Path,
        *,
        kind: str,
        flag: str = "--out",
        protect: Sequence[str | Path] = (),
        recognise: Callable[[Path], str | None] | None = None,
        min_free_mib: int = 16,
        is_file: bool = False,
        mark: bool = True,
    ) -> None:
        self.target = Path(target)
        self.kind = kind
        self.flag = flag
        self.protect = [Path(p) for p in protect]
        self.recognise = recognise
        self.min_free_mib = min_free_mib
        self.is_file = is_file
        self.mark = mark
        self.tmp: Path | None = None
        self._created: list[Path] = []
        self._done = False

    def _refuse(self, why: str, fix: str = "choose a new or empty directory") -> OutputPathError:
        return OutputPathError(f"{self.flag} {self.target}: {why}; nothing was touched; {fix}")

    def check(self) -> None:
        """Refuse a target this command must not replace (raises OutputPathError); touches nothing."""
        out = self.target.absolute()
        real = Path(os.path.realpath(out))
        cwd = Path.cwd().resolve()
        if _inside(cwd, real):
            raise self._refuse("is the current directory or one of its parents")
        for p in self.protect:
            rp = Path(os.path.realpath(p))
            if _inside(rp, real):
                raise self._refuse(f"holds the input {p}", "write the output somewhere else")
        if out.is_symlink() or (out.exists() and not (out.is_file() if self.is_file else out.is_dir())):
            what = "a directory" if self.is_file else "not a directory"
            raise self._refuse(f"exists and is {what}", "choose another path")
        if out.exists():
            self._check_ours(out)
        self._check_space(out)

    def _check_ours(self, out: Path) -> None:
        if self.is_file:
            reason = self.recognise(out) if self.recognise is not None else "exists"
            if reason is not None:
                raise self._refuse(reason, "choose another path or remove it yourself")
            return
        if not any(out.iterdir()):
            return
        marker = _read_marker(out)
        written = marker.get("files") if marker is not None and marker.get("kind") == self.kind else None
        if isinstance(written, dict):
            foreign = foreign_entry(out, written)
            if foreign is None:
                return
            raise self._refuse(
                f"holds {foreign!r}, which this command did not write (or it changed since)",
                "move it out first, or choose a new or empty directory",
            )
        reason = self.recognise(out) if self.recognise is not None else self._not_ours(marker)
        if reason is not None:
            raise self._refuse(reason)

    def _not_ours(self, marker: dict[str, object] | None) -> str:
        if marker is None:
            return f"exists and was not written by this command (no {MARKER})"
        if marker.get("kind") != self.kind:
            kind = marker.get("kind")
            return f"holds another command's output ({MARKER} says {kind!r}, not {self.kind!r})"
        return (
            f"was written by an older version whose {MARKER} does not list its files, so files of yours "
            "in it cannot be told apart; remove it yourself"
        )

    def _check_space(self, out: Path) -> None:
        base = out.parent
        while not base.exists():
            base = base.parent
        if not base.is_dir():
            raise self._refuse(f"{base} is not a directory", "choose another path")
        if not os.access(base, os.W_OK | os.X_OK):
            raise self._refuse(f"{base} is not writable", "choose a writable location")
        free = shutil.disk_usage(base).free
        if free < self.min_free_mib * MIB:
            raise self._refuse(
                f"only {free // MIB} MiB free on the filesystem of {base}, need {self.min_free_mib} MiB",
                "free some space or write elsewhere",
            )

    def __enter__(self) -> Path:
        """Check, then create the temporary sibling; returns the path to write into (a directory)."""
        self.check()
        out = self.target.absolute()
        missing = []
        base = out.parent
        while not base.exists():
            missing.append(base)
            base = base.parent
        try:
            for d in reversed(missing):
                d.mkdir()
                self._created.append(d)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        except OSError as exc:
            self._cleanup()
            raise self._refuse(
                f"cannot write in {out.parent}: {exc.strerror}", "choose a writable location"
            ) from exc
        return self.tmp

    def commit(self) -> None:
        """Swap the finished staging directory into place (replacing the previous output, if any); a SIGINT or
        SIGTERM meanwhile is raised after the swap (`bot.interrupts.deferred`).

        Raises:
            OutputPathError: the target took in a file the command did not write since `check`.
        """
        assert self.tmp is not None, "commit() outside `with`"
        if self.target.exists():
            self._check_ours(self.target.absolute())  # again: a file may have come in while the command ran
        if self.mark and not self.is_file:
            marker = {"kind": self.kind, "files": listing(self.tmp)}
            (self.tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        with deferred():
            self._swap()

    @property
    def committed(self) -> bool:
        """The output is in place (`commit` ran to its end)."""
        return self._done

    def _swap(self) -> None:
        assert self.tmp is not None
        out = self.target.absolute()
        if self.is_file:
            os.replace(self.tmp / out.name, out)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp, self._created, self._done = None, [], True
            return
        old: Path | None = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / out.name)
        try:
            self.tmp.rename(out)
        except OSError:
            if old is not None:
                (old / out.name).rename(out)
                shutil.rmtree(old, ignore_errors=True)
            raise
        self.tmp, self._created, self._done = None, [], True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cleanup()
