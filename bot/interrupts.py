"""SIGINT and SIGTERM in a bot command that writes (`bot backtest`): stop, keep earlier outputs, 130/143.

`Phases` is the command's "what am I doing now" (`phases.now = "deciding 20,000 bars"`); inside its block
both signals raise `Interrupted` (a `BaseException`, so no `except Exception` on the way swallows it) naming
that phase. `bot.outputs.StagedOutput` removes its temporary sibling as the exception passes, and the CLI
prints one line and exits 128 + the signal number.

`deferred()` holds both signals back over the few lines that must not be cut in half (swapping an output
into place); a signal that arrived meanwhile is raised again right after, to whatever handler was there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any, Final

SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while the command was in `phase`."""

    def __init__(self, signum: int, phase: str) -> None:
        self.signum = signum
        self.phase = phase
        self.outcome = "nothing was written"  # what the command left behind, for the CLI's line
        super().__init__(f"interrupted by {self.signal_name} while {phase}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + self.signum


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Phases:
    """Within `with Phases(first) as phases:`, SIGINT/SIGTERM raise `Interrupted(signum, phases.now)`.

    The previous handlers come back at the end of the block. Outside the main thread (where handlers
    cannot be set) the block runs unchanged.
    """

    def __init__(self, first: str) -> None:
        self.now = first
        self._previous: dict[int, Any] = {}

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, self.now)

    def __enter__(self) -> Phases:
        if _in_main_thread():
            self._previous = {sig: signal.signal(sig, self._raise) for sig in SIGNALS}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the block; the first that arrived is raised again after it."""
    if not _in_main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if arrived:
            signal.raise_signal(arrived[0])
