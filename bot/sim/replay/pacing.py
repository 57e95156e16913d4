"""Real-time pacing of the replay exchange's accelerated clock."""

from __future__ import annotations

import asyncio


class Pacer:
    """Real-time pacing of the accelerated clock, with pause/resume."""

    def __init__(self) -> None:
        self._running = asyncio.Event()
        self._running.set()
        self._deadline = 0.0

    def pause(self) -> None:
        """Hold the clock at the next `wait_running` or `tick`."""
        self._running.clear()

    def resume(self) -> None:
        """Let the clock run again."""
        self._running.set()

    def restart(self, *, behind_s: float = 0.0) -> None:
        """Measure the next `tick` from `behind_s` seconds ago (the clock started mid-step)."""
        self._deadline = asyncio.get_running_loop().time() - behind_s

    @property
    def running(self) -> bool:
        """False while paused."""
        return self._running.is_set()

    async def wait_running(self) -> None:
        """Return when the clock is not paused."""
        await self._running.wait()

    async def tick(self, seconds: float) -> None:
        """Advance by `seconds` of real time, against a deadline: sleeps shorter than the timer's granularity
        (~1 ms) average out instead of each costing a whole timer tick. A clock that fell more than 0.25 s
        behind (a pause, a busy loop) restarts from now rather than bursting."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = self._deadline + seconds
        if deadline < now - 0.25:
            deadline = now
        self._deadline = deadline
        await asyncio.sleep(max(deadline - now, 0.0))
        if not self._running.is_set():
            await self._running.wait()
            self._deadline = loop.time()
