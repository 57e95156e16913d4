"""One bot per ledger: the ledger's lock file, and the ledger's error types.

`LedgerLock` is taken before anything else is opened (`python -m bot run`, the service), so a second
instance on the same ledger stops with LedgerInUseError (exit 6) naming the PID that holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

from bot.core.errors import BotError, ConfigError
from bot.outputs import file_target_reason

SQLITE_HEADER: Final = b"SQLite format 3\x00"


class LedgerError(BotError):
    """The ledger file cannot be opened, has another schema, or a write was refused."""


class LedgerInUseError(LedgerError):
    """Another process holds the ledger's lock (a second bot instance on the same ledger)."""


def check_ledger_path(ledger_path: str | Path) -> None:
    """Raise ConfigError (naming `[ledger] path`) when the ledger cannot be created or opened there: a
    directory, a parent that is a file, a directory that is not writable, or a file that is not SQLite (a
    file of the user's). Reads at most 16 bytes; creates nothing."""
    path = Path(ledger_path)
    why = file_target_reason(path)
    if why is None and path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                why = "exists and is not an SQLite file, so not a ledger"
    if why is not None:
        raise ConfigError(
            f"[ledger] path {path}: {why}; point it at the bot's ledger or at a new file in a writable "
            "directory"
        )


class LedgerLock:
    """One bot per ledger: an exclusive, non-blocking `flock` on `<ledger>.lock`, holding the owner's PID.

    The OS drops the lock when the process dies (even SIGKILL), so a stale lock file never blocks a restart.
    `acquire()` raises LedgerInUseError naming the ledger and the PID holding it.
    """

    def __init__(self, ledger_path: str | Path) -> None:
        self.ledger_path = Path(ledger_path)
        self.path = self.ledger_path.with_name(self.ledger_path.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> LedgerLock:
        """Take the lock (idempotent while held); returns self."""
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LedgerError(
                f"{self.path}: cannot create the ledger lock file ({exc.strerror}); "
                "check that [ledger] path is in a writable directory"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LedgerInUseError(
                f"{self.ledger_path}: in use by another bot instance (PID {holder}); stop that one, or give "
                "this one its own [ledger] path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays: removing it would race the next owner."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LedgerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
