"""Output safety for every command that writes (`offline distill`/`fetch`, `bot demo`, `latency-report`).

A command stages its output in a fresh temporary sibling (`.<name>.tmp-XXXX` next to the target) and swaps it
into place only at the end (`StagedOutput.commit`); a failure or an interrupt removes the sibling and leaves
the target as it was. An existing target is replaced only when this project wrote it (`is_ours`): an empty
directory, a directory carrying this module's marker of the same kind, or what `recognise` accepts (a tier
family with its manifest, a klines CSV). Everything else - a directory of the user's files, a regular file,
the directory holding an input, `.`, the current directory or one of its parents - is refused by
`StagedOutput.check` before any work, with `OutputPathError` (a `ConfigError`: exit 2) naming the path and the
fix. Writability (by creating the sibling) and free space are checked up front too.
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

MARKER: Final = ".progdistill-output.json"
MIB: Final = 1 << 20


class OutputPathError(ConfigError):
    """An output path this command must not (or cannot) write: refused before any work, nothing touched."""


def _marker_kind(path: Path) -> str | None:
    try:
        kind = json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


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
        if not any(out.iterdir()) or _marker_kind(out) == self.kind:
            return
        reason = self.recognise(out) if self.recognise is not None else None
        if self.recognise is None or reason is not None:
            why = reason or f"exists and was not written by this command (no {MARKER})"
            raise self._refuse(why)

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
        """Swap the finished staging directory into place (replacing the previous output, if any)."""
        assert self.tmp is not None, "commit() outside `with`"
        out = self.target.absolute()
        if self.is_file:
            os.replace(self.tmp / out.name, out)
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp, self._created = None, []
            return
        if self.mark:
            (self.tmp / MARKER).write_text(json.dumps({"kind": self.kind}) + "\n", encoding="utf-8")
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
        self.tmp = None
        self._created = []
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
