"""Ctrl-C and SIGTERM during an offline run: stop at once, leave the previous outputs alone, exit 130/143.

scikit-learn's `MLPRegressor.partial_fit` catches `KeyboardInterrupt` inside its batch loop and only warns
("Training interrupted by user."), so a plain Ctrl-C would cut one epoch short and let the run go on to
export cut-short models. `stop_on_signals` installs SIGINT/SIGTERM handlers that raise `Interrupted` (a
`BaseException` that is not a `KeyboardInterrupt`): it passes through scikit-learn's handler and every
`except Exception`, unwinds the staged output (`bot.outputs.StagedOutput` removes its temporary sibling) and
reaches the CLI, which prints what was interrupted and exits 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_doing: list[str] = [""]


def doing(what: str) -> None:
    """Record what the run is doing now (e.g. "training teacher research, epoch 3/40"), for the message."""
    _doing[0] = what


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived during an offline run; `signum` is the signal, `during` what was running."""

    def __init__(self, signum: int, during: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.during = during

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum, _doing[0])


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; the previous handlers come back after.

    Outside the main thread (signal handlers cannot be set there) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _doing[0] = ""
        for sig, handler in previous.items():
            signal.signal(sig, handler)
