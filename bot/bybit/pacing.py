"""Pacing of requests to Bybit: at most `limit` in any rolling `window_s`, plus server-told pauses.

One `RateWindow` per limit, shared by every task that spends it: the REST client's requests (Bybit's IP
limit is 600 requests in any 5 s; HTTP 403 past it) and the websocket connection opens (500 in any 5 min
per domain). `acquire()` waits, first come first served, until a slot is free and no pause is in force;
`hold(seconds)` is a pause the exchange asked for (`X-Bapi-Limit-Status: 0` until the reset timestamp).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class RateWindow:
    """At most `limit` acquisitions in any `window_s` seconds (None: unlimited; holds still apply).

    Args:
        limit: acquisitions per window (>= 1), or None.
        window_s: the rolling window, seconds (> 0).
        clock: monotonic seconds (tests pass a fake one).
        sleep: the sleep used while waiting (tests pass a fake one).
    """

    def __init__(
        self,
        limit: int | None,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None (unlimited), got {limit}")
        if window_s <= 0:
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._hold_until = 0.0
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # total time callers spent waiting in `acquire`

    def hold(self, seconds: float) -> None:
        """Let no acquisition through for `seconds` from now (a longer hold already in force stays)."""
        self._hold_until = max(self._hold_until, self._clock() + max(seconds, 0.0))

    def wait_s(self) -> float:
        """How long an `acquire()` now would wait (0 = at once)."""
        now = self._clock()
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()
        wait = self._hold_until - now
        if self.limit is not None and len(self._times) >= self.limit:
            wait = max(wait, self._times[0] + self.window_s - now)
        return max(wait, 0.0)

    async def acquire(self) -> None:
        """Wait for a slot (FIFO among callers), then take it."""
        async with self._lock:
            while (wait := self.wait_s()) > 0:
                self.waited_s += wait
                await self._sleep(wait)
            if self.limit is not None:
                self._times.append(self._clock())
