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
        # Confirm faults pending per symbol (None: whichever symbol's confirm comes next).
        self._dup_confirms: dict[str | None, int] = {}
        self._late_confirms: dict[str | None, int] = {}
        self._late_lag_bars = 2
        self._late_due: list[tuple[int, str, bytes]] = []
        self._skip_confirms: dict[str | None, int] = {}
        self.banned = False
        self.failing_symbols: set[str] = set()  # kline requests answered with HTTP 502

    # ---- switches ---------------------------------------------------------------------------------------

    def drop_next(self, n: int, stage: DropStage) -> None:
        """Drop the next `n` websockets at `stage`."""
        self._drop_stages.extend([stage] * n)

    def duplicate_confirms(self, n: int, symbol: str | None = None) -> None:
        """Send each of the next `n` confirms (of `symbol`; None = of any symbol) twice."""
        self._dup_confirms[symbol] = self._dup_confirms.get(symbol, 0) + n

    def late_confirms(self, n: int, lag_bars: int, symbol: str | None = None) -> None:
        """Re-send each of the next `n` confirms (of `symbol`; None = of any) again `lag_bars` bars later."""
        self._late_confirms[symbol] = self._late_confirms.get(symbol, 0) + n
        self._late_lag_bars = lag_bars

    def skip_confirms(self, n: int, symbol: str | None = None) -> None:
        """Do not push the next `n` confirms (of `symbol`; None = of any symbol)."""
        self._skip_confirms[symbol] = self._skip_confirms.get(symbol, 0) + n

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
        if _take(self._skip_confirms, symbol):
            return 0
        copies = 2 if _take(self._dup_confirms, symbol) else 1
        if _take(self._late_confirms, symbol):
            self._late_due.append((start_ms + self._late_lag_bars * interval_ms, symbol, frame))
        return copies

    def take_late(self, slot_ms: int) -> list[tuple[str, bytes]]:
        """Late confirms due at or before the bar opening at `slot_ms`: (symbol, frame), in schedule order."""
        due = [(symbol, frame) for at, symbol, frame in self._late_due if at <= slot_ms]
        self._late_due = [d for d in self._late_due if d[0] > slot_ms]
        return due


def _take(pending: dict[str | None, int], symbol: str) -> bool:
    """Consume one pending fault of `symbol`, else one meant for any symbol; False when none is pending."""
    for key in (symbol, None):
        if pending.get(key, 0) > 0:
            pending[key] -= 1
            return True
    return False
