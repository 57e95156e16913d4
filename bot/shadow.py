"""Shadow scoring: every tier forecasts every decided bar, and is scored when the horizon has passed.

After a bar's decision is emitted (off the latency path), the service hands the scorer every tier's
forecast for that bar (`ShadowScorer.on_bar`). Once `horizon_bars` more bars of the symbol have closed, the
realised return is known and each tier's forecast is scored; once `vol_horizon_bars` have, its volatility
forecast too. Over a rolling window of scored bars (all symbols) it reports, per tier:

- `ic`: the Pearson correlation of predicted and realised returns (None with fewer than `min_scored` bars or
  no variance);
- `vol_qlike`: mean QLIKE of the variance forecasts (`s/h - log(s/h) - 1`, zero when exact);
- `vol_ic`: the Pearson correlation of predicted and realised volatility (None as for `ic`);
- `regret`: the router's loss minus this tier's on the same bars (squared return error; positive = this tier
  would have done better than the tier the router chose).

`snapshot()` returns all of them per tier as `ShadowScore`s (the service sends them to the gauges and to the
ledger's `shadow_scores`); `replay(history)` re-seeds a fresh scorer from the ledger's `shadow_forecasts`
after a restart, so the windows and the forecasts still waiting for their horizon carry on as if
uninterrupted.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

_T = TypeVar("_T")

#: tier -> (predicted return, predicted volatility or None): every tier's forecast of one bar.
Forecasts = Mapping[str, tuple[float, float | None]]


@dataclass(frozen=True, slots=True)
class ShadowScore:
    """One tier's rolling scores over the last `window` scored bars (all symbols); None = not measured yet."""

    tier: str
    window: int  # scored bars kept per tier
    n: int  # return forecasts scored in the window now
    ic: float | None
    vol_ic: float | None
    vol_qlike: float | None
    regret: float | None


@dataclass(frozen=True, slots=True)
class ShadowBar:
    """A decided bar as the scorer saw it (what `ShadowScorer.replay` takes back from the ledger).

    `forecasts` is empty for a decided bar whose forecasts were not stored: it still counts towards the
    horizon of the bars before it.
    """

    symbol: str
    start_ms: int
    close: float
    routed: str
    forecasts: Forecasts


@dataclass(slots=True)
class _Pending:
    index: int  # the bar's position in the symbol's close history
    close: float
    routed: str
    forecasts: dict[str, tuple[float, float | None]]  # tier -> (return, vol)
    return_scored: bool = False
    vol_scored: bool = False


@dataclass(slots=True)
class _Symbol:
    closes: deque[float] = field(default_factory=deque)
    n: int = 0  # closes seen
    pending: deque[_Pending] = field(default_factory=deque)


class ShadowScorer:
    """Rolling live scores of every tier (see the module docstring).

    Args:
        horizon_bars: the return forecast's horizon.
        vol_horizon_bars: the volatility forecast's horizon (RMS of one-bar log returns).
        window: scored bars kept per tier.
        min_scored: bars needed before an IC is reported.
    """

    def __init__(
        self, *, horizon_bars: int, vol_horizon_bars: int, window: int = 500, min_scored: int = 20
    ) -> None:
        self.horizon_bars = horizon_bars
        self.vol_horizon_bars = vol_horizon_bars
        self.window = window
        self.min_scored = min_scored
        self._symbols: dict[str, _Symbol] = {}
        self._returns: dict[str, deque[tuple[float, float]]] = {}  # tier -> (predicted, realised)
        self._regret: dict[str, deque[float]] = {}  # tier -> routed loss - tier loss
        self._qlike: dict[str, deque[float]] = {}
        self._vols: dict[str, deque[tuple[float, float]]] = {}  # tier -> (predicted, realised) volatility
        self.scored = 0

    def on_bar(
        self,
        symbol: str,
        close: float,
        routed: str,
        forecasts: Forecasts,
    ) -> None:
        """A decided bar: its close, the routed tier and every tier's (return, vol) forecast."""
        st = self._symbols.setdefault(symbol, _Symbol())
        keep = max(self.horizon_bars, self.vol_horizon_bars) + 1
        st.closes.append(close)
        if len(st.closes) > keep:
            st.closes.popleft()
        st.n += 1
        now = st.n - 1
        for p in st.pending:
            if not p.return_scored and now - p.index >= self.horizon_bars:
                self._score_return(p, close / p.close - 1.0)
            if not p.vol_scored and now - p.index >= self.vol_horizon_bars:
                self._score_vol(p, self._realised_vol(st, p.index))
        while st.pending and st.pending[0].return_scored and st.pending[0].vol_scored:
            st.pending.popleft()
        st.pending.append(_Pending(now, close, routed, dict(forecasts)))

    def replay(self, history: Iterable[ShadowBar]) -> int:
        """Feed stored decided bars (oldest first, contiguous per symbol) as if live; returns how many.

        Used once at start-up on a fresh scorer: the windows fill with the scores an uninterrupted run had
        (up to the order of symbols within one bar time) and the newest bars wait for their horizon again.
        """
        n = 0
        for h in history:
            self.on_bar(h.symbol, h.close, h.routed, h.forecasts)
            n += 1
        return n

    def _realised_vol(self, st: _Symbol, index: int) -> float:
        """RMS of the one-bar log returns after bar `index` up to now (the last `vol_horizon_bars` closes)."""
        first = len(st.closes) - 1 - (st.n - 1 - index)
        c = list(st.closes)[max(first, 0) :]
        r = [math.log(b / a) for a, b in itertools.pairwise(c)]
        return math.sqrt(sum(x * x for x in r) / len(r)) if r else 0.0

    def _score_return(self, p: _Pending, realised: float) -> None:
        p.return_scored = True
        self.scored += 1
        routed_pred = p.forecasts[p.routed][0] if p.routed in p.forecasts else None
        routed_loss = None if routed_pred is None else (routed_pred - realised) ** 2
        for tier, (pred, _vol) in p.forecasts.items():
            self._ring(self._returns, tier).append((pred, realised))
            if routed_loss is not None:
                self._ring(self._regret, tier).append(routed_loss - (pred - realised) ** 2)

    def _score_vol(self, p: _Pending, realised_vol: float) -> None:
        p.vol_scored = True
        if realised_vol <= 0.0:
            return
        for tier, (_pred, vol) in p.forecasts.items():
            if vol is not None and vol > 0.0:
                ratio = (realised_vol / vol) ** 2
                self._ring(self._qlike, tier).append(ratio - math.log(ratio) - 1.0)
                self._ring(self._vols, tier).append((vol, realised_vol))

    def _ring(self, d: dict[str, deque[_T]], tier: str) -> deque[_T]:
        ring = d.get(tier)
        if ring is None:
            ring = d[tier] = deque(maxlen=self.window)
        return ring

    # ---- read-outs -------------------------------------------------------------------------------------

    @property
    def horizon_span(self) -> int:
        """Bars a forecast waits before it is fully scored (the longer of the two horizons)."""
        return max(self.horizon_bars, self.vol_horizon_bars)

    @property
    def tiers(self) -> list[str]:
        return list(self._returns)

    def scored_bars(self, tier: str) -> int:
        return len(self._returns.get(tier, ()))

    def ic(self, tier: str) -> float | None:
        """Pearson IC of the tier's return forecasts over the window; None until `min_scored` bars."""
        return self._corr(self._returns.get(tier))

    def vol_ic(self, tier: str) -> float | None:
        """Pearson correlation of the tier's volatility forecasts with the realised volatility over the
        window; None until `min_scored` scored vol forecasts (or without a vol head)."""
        return self._corr(self._vols.get(tier))

    def _corr(self, pairs: deque[tuple[float, float]] | None) -> float | None:
        if not pairs or len(pairs) < self.min_scored:
            return None
        a = np.asarray(pairs, dtype=np.float64)
        if np.ptp(a[:, 0]) == 0.0 or np.ptp(a[:, 1]) == 0.0:  # a constant side (exact; std() rounds)
            return None
        return float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])

    def regret(self, tier: str) -> float | None:
        """Mean (router's squared error - this tier's) over the window; None before any scored bar."""
        ring = self._regret.get(tier)
        return float(sum(ring) / len(ring)) if ring else None

    def vol_qlike(self, tier: str) -> float | None:
        """Mean QLIKE of the tier's volatility forecasts over the window; None without vol forecasts."""
        ring = self._qlike.get(tier)
        return float(sum(ring) / len(ring)) if ring else None

    def snapshot(self) -> list[ShadowScore]:
        """Every scored tier's scores now (an IC computation per tier: every few bars, not per read)."""
        return [
            ShadowScore(
                tier=t,
                window=self.window,
                n=self.scored_bars(t),
                ic=self.ic(t),
                vol_ic=self.vol_ic(t),
                vol_qlike=self.vol_qlike(t),
                regret=self.regret(t),
            )
            for t in self.tiers
        ]
