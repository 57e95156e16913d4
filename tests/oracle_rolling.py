"""Running statistics in plain floats, O(1) per value: the building blocks of the feature and regime states.

`RollingWindow` keeps a fixed-length window's sum and sum of squares, `EwMean` a bias-corrected
exponentially weighted mean; `copy_state` copies an incremental state object holding them (to rehearse an
update on throwaway state).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import TypeVar


class RollingWindow:
    """Fixed-length window keeping a running sum and sum of squares (O(1) per push); shared with regime."""

    __slots__ = ("buf", "n", "s", "ss")

    def __init__(self, n: int) -> None:
        self.n = n
        self.buf: deque[float] = deque()
        self.s = 0.0
        self.ss = 0.0

    def copy(self) -> RollingWindow:
        """An independent copy (for rehearsals on throwaway state)."""
        new = RollingWindow.__new__(RollingWindow)
        new.n, new.buf, new.s, new.ss = self.n, self.buf.copy(), self.s, self.ss
        return new

    def push(self, x: float) -> None:
        buf = self.buf
        buf.append(x)
        self.s += x
        self.ss += x * x
        if len(buf) > self.n:
            old = buf.popleft()
            self.s -= old
            self.ss -= old * old

    @property
    def full(self) -> bool:
        return len(self.buf) == self.n

    def mean(self) -> float:
        return self.s / len(self.buf)

    def std(self) -> float:
        m = self.s / len(self.buf)
        var = self.ss / len(self.buf) - m * m
        return math.sqrt(var) if var > 1e-30 else 0.0

    def rms(self) -> float:
        ms = self.ss / len(self.buf)
        return math.sqrt(ms) if ms > 0.0 else 0.0


class EwMean:
    """Exponentially weighted mean with half-life `half_life` (bars), bias-corrected so it is defined from the
    first value: after values x_1..x_n it is `sum_k w^(n-k) x_k / sum_k w^(n-k)` with `w = 0.5^(1/half_life)`
    (the normaliser is what Adam's bias correction divides by). O(1) per push, plain floats."""

    __slots__ = ("decay", "m", "norm")

    def __init__(self, half_life: float) -> None:
        self.decay = 0.5 ** (1.0 / half_life)
        self.m = 0.0
        self.norm = 0.0

    def copy(self) -> EwMean:
        """An independent copy (for rehearsals on throwaway state)."""
        new = EwMean.__new__(EwMean)
        new.decay, new.m, new.norm = self.decay, self.m, self.norm
        return new

    def push(self, x: float) -> None:
        d = self.decay
        self.m = d * self.m + (1.0 - d) * x
        self.norm = d * self.norm + (1.0 - d)

    @property
    def empty(self) -> bool:
        return self.norm == 0.0

    def mean(self) -> float:
        """The weighted mean (0.0 before the first push)."""
        return self.m / self.norm if self.norm > 0.0 else 0.0


_S = TypeVar("_S")


def copy_state(state: _S) -> _S:
    """Copy an incremental state object: its windows and deques are copied, everything else (config,
    numbers) is shared. Used to rehearse an update on throwaway state."""
    new = copy.copy(state)
    for name, value in vars(state).items():
        if isinstance(value, RollingWindow | EwMean | deque):
            setattr(new, name, value.copy())
    return new
