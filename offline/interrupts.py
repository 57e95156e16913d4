"""Ctrl-C and SIGTERM during an offline run: stop at once, leave the previous outputs alone, exit 130/143.

scikit-learn's `MLPRegressor.partial_fit` catches `KeyboardInterrupt` inside its batch loop and only warns
("Training interrupted by user."), so a plain Ctrl-C would cut one epoch short and let the run go on to
export cut-short models. `stop_on_signals` installs SIGINT/SIGTERM handlers that raise
`bot.interrupts.Interrupted` (the one such class of every command; a `BaseException` that is not a
`KeyboardInterrupt`): it passes through scikit-learn's handler and every `except Exception`, unwinds the
staged output (`bot.outputs.StagedOutput` removes its temporary sibling) and reaches the CLI, which prints
what was interrupted and exits 128 + the signal number.

`phase(name, what)` marks the start of a named phase of a run (distill, retrain, sweep: "data", "training",
"export", "promote", retrain's "scoring"). A test hook: with the environment variable `PAUSE_ENV`
(`PROGDISTILL_PAUSE_AT`) set to a phase's name, the run prints `paused at phase NAME` on stderr when it
reaches that phase and sleeps there (up to `PAUSE_MAX_S`), so a test can send a real signal in exactly
that phase (tests/test_bad_input.py). Unset, it only records `what`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Final

from bot.interrupts import Interrupted as Interrupted

PAUSE_ENV: Final = "PROGDISTILL_PAUSE_AT"
PAUSE_MAX_S: Final = 60.0

_doing: list[str] = [""]


def doing(what: str) -> None:
    """Record what the run is doing now (e.g. "training teacher research, epoch 3/40"), for the message."""
    _doing[0] = what


def phase(name: str, what: str) -> None:
    """A named phase of the run begins (`doing(what)`); pauses here for a test when `PAUSE_ENV` names it."""
    doing(what)
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"paused at phase {name} ({PAUSE_ENV})", file=sys.stderr, flush=True)
    deadline = time.monotonic() + PAUSE_MAX_S
    while time.monotonic() < deadline:
        time.sleep(0.05)  # a signal's handler raises from here


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum, _doing[0])


_active: list[bool] = [False]


def reclaim() -> None:
    """Install the handlers of `stop_on_signals` again, after a library replaced them (`ray.init` installs
    its own SIGTERM handler in the driver, which kills the process without unwinding)."""
    if _active[0] and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _raise)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted`; the previous handlers come back after.

    Outside the main thread (signal handlers cannot be set there) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    _active[0] = True
    try:
        yield
    finally:
        _active[0] = False
        _doing[0] = ""
        for sig, handler in previous.items():
            signal.signal(sig, handler)
