"""Decision lag per symbol: closed bars the exchange has that the pipeline has not decided yet.

Pure and clock-free: the shell feeds it the stream's newest closed open time and the last bar the engine
absorbed, on every event of that symbol. A symbol is *lagging* when more than `warn_bars` closed bars
wait; it is *stalled* when, while lagging, `restart_bars` more bars closed and not one was decided, and at
least `min_stall_s` passed on the injected monotonic clock since the last progress - the service then exits
so that systemd restarts it (the restart resumes from the ledger). Live, bars close in real time and the
bar count decides; the time floor keeps an accelerated replay (bars milliseconds apart) from calling a
REST round trip a stall.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LagState:
    """One symbol's lag after an update."""

    symbol: str
    lag_bars: int
    lagging: bool
    stalled: bool
    crossed: bool  # this update turned `lagging` on (log once per crossing)
    recovered: bool  # this update turned `lagging` off


class DecisionLag:
    """Per-symbol lag bookkeeping.

    Args:
        interval_ms: bar length.
        warn_bars: lagging above this many undecided closed bars.
        restart_bars: stalled when this many bars closed since lagging began with no bar decided...
        min_stall_s: ... and at least this many seconds passed on `clock` without a decision.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        interval_ms: int,
        *,
        warn_bars: int,
        restart_bars: int,
        min_stall_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if warn_bars < 1 or restart_bars < 1:
            raise ValueError(f"warn_bars and restart_bars must be >= 1, got {warn_bars}, {restart_bars}")
        self.interval_ms = interval_ms
        self.warn_bars = warn_bars
        self.restart_bars = restart_bars
        self.min_stall_s = min_stall_s
        self._clock = clock
        self.lag_bars: dict[str, int] = {}
        # symbol -> (newest closed, last decided, clock) at the crossing or the last progress
        self._since: dict[str, tuple[int, int | None, float]] = {}

    @property
    def any_lagging(self) -> bool:
        """True while some symbol is lagging."""
        return bool(self._since)

    def forget(self, symbol: str) -> None:
        """`symbol` is no longer run: its lag and any lagging state are dropped."""
        self.lag_bars.pop(symbol, None)
        self._since.pop(symbol, None)

    def update(self, symbol: str, newest_closed_ms: int | None, last_decided_ms: int | None) -> LagState:
        """Recompute `symbol`'s lag; `last_decided_ms` None = nothing absorbed yet."""
        if newest_closed_ms is None:
            lag = 0
        elif last_decided_ms is None:
            lag = 1
        else:
            lag = max(0, (newest_closed_ms - last_decided_ms) // self.interval_ms)
        self.lag_bars[symbol] = lag
        was = symbol in self._since
        if lag <= self.warn_bars:
            self._since.pop(symbol, None)
            return LagState(symbol, lag, False, False, False, was)
        if not was:
            self._since[symbol] = (newest_closed_ms or 0, last_decided_ms, self._clock())
            return LagState(symbol, lag, True, False, True, False)
        closed0, decided0, t0 = self._since[symbol]
        if decided0 != last_decided_ms:  # progress: a backlog, not a stall; restart the count
            self._since[symbol] = (newest_closed_ms or 0, last_decided_ms, self._clock())
            return LagState(symbol, lag, True, False, False, False)
        stalled = (newest_closed_ms or 0) - closed0 >= self.restart_bars * self.interval_ms and (
            self._clock() - t0 >= self.min_stall_s
        )
        return LagState(symbol, lag, True, stalled, False, False)
