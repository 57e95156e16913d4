"""One time budget for the whole shutdown (`service.shutdown_timeout_s`).

The service runs each shutdown step (stop the running tasks, close the feed, the REST session, the metrics
server, the ledger) through `ShutdownBudget.step`. The budget starts with the first step; a step still
running when it is spent is cancelled and *abandoned* (never awaited again, so a step that ignores the
cancellation cannot hold the process), logged as `shutdown_timeout` with the step's name, and the run ends
with `ShutdownTimeoutError` (the CLI exits 5) once the remaining steps have had their turn. Steps that
start after the deadline still run, each for at most `late_grace_s`, so the quick ones (closing a session,
the ledger) still happen; one that needs longer is abandoned too (logged with `late=True`). A synchronous
step cannot be interrupted: it runs to completion and is reported when the deadline passed during it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from bot.core.errors import BotError
from bot.observe import logs

STEP_FAILED_LIMIT: Final = 200  # characters of a failed step's error kept in the log line
LATE_GRACE_S: Final = 0.1  # default time for each step that starts after the deadline


class ShutdownTimeoutError(BotError):
    """A shutdown step did not finish within `service.shutdown_timeout_s` and was abandoned."""


class ShutdownBudget:
    """Runs shutdown steps under one overall deadline.

    Args:
        budget_s: seconds for all steps together, counted from `start()` (or the first step).
        log: a structlog logger for `shutdown_timeout` / `shutdown_step_failed` lines.
        late_grace_s: seconds for each step that starts after the deadline (>= 0).
        clock: monotonic seconds (tests may pass their own).

    `abandoned` lists the steps that overran the deadline, then those that started after it and still did
    not finish within `late_grace_s`.
    """

    def __init__(
        self,
        budget_s: float,
        log: Any,
        *,
        late_grace_s: float = LATE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not budget_s > 0:
            raise ValueError(f"shutdown budget must be a positive number of seconds, got {budget_s}")
        if not late_grace_s >= 0:
            raise ValueError(f"late_grace_s must be >= 0 seconds, got {late_grace_s}")
        self.budget_s = budget_s
        self.late_grace_s = late_grace_s
        self._log = log
        self._clock = clock
        self._deadline: float | None = None
        self.abandoned: list[str] = []
        self._abandoned_tasks: list[asyncio.Future[Any]] = []

    def start(self) -> None:
        """Start the clock (idempotent: the first call counts)."""
        if self._deadline is None:
            self._deadline = self._clock() + self.budget_s

    @property
    def remaining_s(self) -> float:
        """Seconds left (0 when spent); the full budget before `start()`."""
        if self._deadline is None:
            return self.budget_s
        return max(0.0, self._deadline - self._clock())

    @property
    def elapsed_s(self) -> float:
        """Seconds since `start()` (0 before)."""
        return 0.0 if self._deadline is None else self._clock() - (self._deadline - self.budget_s)

    async def step(self, name: str, aw: Awaitable[Any]) -> asyncio.Future[Any] | None:
        """Await `aw` within what is left of the budget.

        Returns:
            The finished future (its result, exception or cancellation is the caller's to read), or None
            when the step was abandoned at the deadline (cancelled, logged, and never awaited again).
        """
        self.start()
        remaining = self.remaining_s
        late = remaining <= 0
        fut = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait({fut}, timeout=self.late_grace_s if late else remaining)
        if fut in done:
            return fut
        fut.cancel()
        self._abandoned_tasks.append(fut)  # keep a reference; the loop's teardown may still collect it
        self._timed_out(name, late=late)
        return None

    def _timed_out(self, name: str, *, late: bool) -> None:
        self.abandoned.append(name)
        self._log.error(
            logs.SHUTDOWN_TIMEOUT,
            step=name,
            late=late,
            budget_s=self.budget_s,
            elapsed_s=round(self.elapsed_s, 3),
        )

    async def close(self, name: str, aw: Awaitable[Any]) -> None:
        """A closing step whose failure is logged (`shutdown_step_failed`) and does not stop the shutdown."""
        fut = await self.step(name, aw)
        if fut is not None and not fut.cancelled() and fut.exception() is not None:
            exc = fut.exception()
            self._log.warning(
                logs.SHUTDOWN_STEP_FAILED, step=name, error=f"{type(exc).__name__}: {exc}"[:STEP_FAILED_LIMIT]
            )

    def run_sync(self, name: str, fn: Callable[[], object]) -> None:
        """A synchronous step: it cannot be interrupted; it is reported when the deadline passed during it
        (or, started late, when it took longer than `late_grace_s`)."""
        self.start()
        late = self.remaining_s <= 0
        t0 = self._clock()
        fn()
        if (self._clock() - t0 > self.late_grace_s) if late else self.remaining_s <= 0:
            self._timed_out(name, late=late)

    def raise_if_abandoned(self) -> None:
        """Raise ShutdownTimeoutError naming the abandoned steps, if any."""
        if self.abandoned:
            raise ShutdownTimeoutError(
                f"shutdown step(s) {self.abandoned} did not finish within service.shutdown_timeout_s = "
                f"{self.budget_s:g} s and were abandoned; the ledger is committed per bar, so a restart "
                "resumes from it (raise service.shutdown_timeout_s, below the unit's TimeoutStopSec, "
                "if a step is legitimately slow)"
            )
