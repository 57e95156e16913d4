"""The one backoff policy of the Bybit edge: capped exponential with jitter (reconnects, REST retries)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delay before retry number `attempt` (0-based): `min(max_s, initial_s * 2**attempt)` times a jitter
    factor drawn uniformly from `[jitter_low, 1]`.

    Args:
        initial_s: the first delay's cap, seconds (> 0).
        max_s: cap for every delay, seconds (>= initial_s).
        jitter_low: lower end of the jitter factor, in [0, 1]; 1 = no jitter.
        rand: a uniform(a, b) source (default `random.uniform`; tests pass a fixed one).
    """

    __slots__ = ("_rand", "initial_s", "jitter_low", "max_s")

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        jitter_low: float = 0.5,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(
                f"backoff must satisfy 0 < initial_s <= max_s, got initial_s={initial_s}, max_s={max_s}"
            )
        if not 0 <= jitter_low <= 1:
            raise ValueError(f"jitter_low must be in [0, 1], got {jitter_low}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter_low = jitter_low
        self._rand = rand

    def cap_s(self, attempt: int) -> float:
        """The delay before jitter for retry `attempt` (0-based), seconds."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # 2.0**attempt overflows (OverflowError) past 1023, long after any cap is reached
        return min(self.max_s, self.initial_s * 2.0 ** min(attempt, 64))

    def delay_s(self, attempt: int) -> float:
        """The jittered delay before retry `attempt` (0-based), seconds, in `[jitter_low * cap, cap]`."""
        return self.cap_s(attempt) * self._rand(self.jitter_low, 1.0)
