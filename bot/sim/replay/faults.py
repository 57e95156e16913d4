"""The replay exchange's fault plan: what it does wrong next, set by tests and consulted by the server.

Synchronous and free of I/O: switches count faults up, the server takes them one at a time (a websocket
drop stage per accepted connection, a REST fault per request, a confirm plan per closed bar).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

DropStage = Literal["handshake", "open", "subscribe"]
RestFaultKind = Literal["10006", "10006_no_reset", "403", "5xx", "slow"]


@dataclass(frozen=True, slots=True)
class RestFault:
    """One faulty REST answer; `value`: the reset wait in s (10006) or the delay in s (slow)."""

    kind: RestFaultKind
    value: float = 0.0


class FaultPlan:
    """Pending faults. Each `take_*`/`confirm_copies` call consumes what it returns."""

    def __init__(self) -> None:
        self._drop_stages: deque[DropStage] = deque()
        self._rest_faults: deque[RestFault] = deque()
        self._dup_confirms = 0
        self._late_confirms = 0
        self._late_lag_bars = 2
        self._late_due: list[tuple[int, str, bytes]] = []
        self._skip_confirms = 0
        self.banned = False
        self.failing_symbols: set[str] = set()  # kline requests answered with HTTP 502

    # ---- switches ---------------------------------------------------------------------------------------

    def drop_next(self, n: int, stage: DropStage) -> None:
        """Drop the next `n` websockets at `stage`."""
        self._drop_stages.extend([stage] * n)

    def duplicate_confirms(self, n: int) -> None:
        """Send each of the next `n` confirms twice."""
        self._dup_confirms += n

    def late_confirms(self, n: int, lag_bars: int) -> None:
        """Re-send each of the next `n` confirms again `lag_bars` bars later."""
        self._late_confirms += n
        self._late_lag_bars = lag_bars

    def skip_confirms(self, n: int) -> None:
        """Do not push the next `n` confirms."""
        self._skip_confirms += n

    def rest_fault(self, kind: RestFaultKind, n: int, value: float) -> None:
        """Answer the next `n` REST requests with `kind`."""
        self._rest_faults.extend([RestFault(kind, value)] * n)

    def clear_rest_faults(self) -> None:
        """Forget the REST faults not yet served."""
        self._rest_faults.clear()

    # ---- consulted by the server ------------------------------------------------------------------------

    def take_drop_stage(self) -> DropStage | None:
        """The drop stage of a newly accepted websocket (None = serve it normally)."""
        return self._drop_stages.popleft() if self._drop_stages else None

    def take_rest_fault(self) -> RestFault | None:
        """The fault of this REST request (None = answer normally; a ban is checked separately)."""
        return self._rest_faults.popleft() if self._rest_faults else None

    def confirm_copies(self, symbol: str, start_ms: int, interval_ms: int, frame: bytes) -> int:
        """How many times to push this confirm now (0 skipped, 1, or 2 duplicated); schedules a late copy."""
        if self._skip_confirms > 0:
            self._skip_confirms -= 1
            return 0
        copies = 1
        if self._dup_confirms > 0:
            self._dup_confirms -= 1
            copies = 2
        if self._late_confirms > 0:
            self._late_confirms -= 1
            self._late_due.append((start_ms + self._late_lag_bars * interval_ms, symbol, frame))
        return copies

    def take_late(self, slot_ms: int) -> list[tuple[str, bytes]]:
        """Late confirms due at or before the bar opening at `slot_ms`: (symbol, frame), in schedule order."""
        due = [(symbol, frame) for at, symbol, frame in self._late_due if at <= slot_ms]
        self._late_due = [d for d in self._late_due if d[0] > slot_ms]
        return due
