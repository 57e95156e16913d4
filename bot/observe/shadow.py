"""Shadow scoring: every tier forecasts every decided bar, and is scored when the horizon has passed.

After a bar's decision is emitted (off the latency path), the service hands the scorer every tier's
forecast for that bar (`ShadowScorer.on_bar`). Once `horizon_bars` more bars of the symbol have closed, the
realised return is known and each tier's forecast is scored; once `vol_horizon_bars` have, its volatility
forecast too. Over a rolling window of each symbol's scored bars it reports, per symbol and tier (symbols are
kept apart: a tier that forecasts one market well and another badly shows both):

- `ic`: the Pearson correlation of predicted and realised returns (None with fewer than `min_scored` bars or
  no variance);
- `vol_qlike`: mean QLIKE of the variance forecasts (`s/h - log(s/h) - 1`, zero when exact);
- `vol_ic`: the Pearson correlation of predicted and realised volatility (None as for `ic`);
- `regret`: the router's loss minus this tier's on the same bars (squared return error; positive = this tier
  would have done better than the tier the router chose).

`snapshot(symbol)` returns all of them per tier as `ShadowScore`s (the service sends them to the gauges and
to the ledger's `shadow_scores`); `replay(history)` re-seeds a fresh scorer from the ledger's
`shadow_forecasts` after a restart, so every symbol's windows and the forecasts still waiting for their
horizon carry on as if uninterrupted.
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
_Key = tuple[str, str]  # (symbol, tier)


@dataclass(frozen=True, slots=True)
class ShadowScore:
    """One tier's rolling scores over the last `window` scored bars of `symbol`; None = not measured yet.

    `symbol` None: a score pooled over all symbols (rows a ledger stored before scores were per symbol).
    """

    symbol: str | None
    tier: str
    window: int  # scored bars kept per symbol and tier
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
        window: scored bars kept per symbol and tier.
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
        # keyed by (symbol, tier):
        self._returns: dict[_Key, deque[tuple[float, float]]] = {}  # (predicted, realised) return
        self._regret: dict[_Key, deque[float]] = {}  # routed loss - tier loss
        self._qlike: dict[_Key, deque[float]] = {}
        self._vols: dict[_Key, deque[tuple[float, float]]] = {}  # (predicted, realised) volatility
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
                self._score_return(symbol, p, close / p.close - 1.0)
            if not p.vol_scored and now - p.index >= self.vol_horizon_bars:
                self._score_vol(symbol, p, self._realised_vol(st, p.index))
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

    def _score_return(self, symbol: str, p: _Pending, realised: float) -> None:
        p.return_scored = True
        self.scored += 1
        routed_pred = p.forecasts[p.routed][0] if p.routed in p.forecasts else None
        routed_loss = None if routed_pred is None else (routed_pred - realised) ** 2
        for tier, (pred, _vol) in p.forecasts.items():
            self._ring(self._returns, (symbol, tier)).append((pred, realised))
            if routed_loss is not None:
                self._ring(self._regret, (symbol, tier)).append(routed_loss - (pred - realised) ** 2)

    def _score_vol(self, symbol: str, p: _Pending, realised_vol: float) -> None:
        p.vol_scored = True
        if realised_vol <= 0.0:
            return
        for tier, (_pred, vol) in p.forecasts.items():
            if vol is not None and vol > 0.0:
                ratio = (realised_vol / vol) ** 2
                self._ring(self._qlike, (symbol, tier)).append(ratio - math.log(ratio) - 1.0)
                self._ring(self._vols, (symbol, tier)).append((vol, realised_vol))

    def _ring(self, d: dict[_Key, deque[_T]], key: _Key) -> deque[_T]:
        ring = d.get(key)
        if ring is None:
            ring = d[key] = deque(maxlen=self.window)
        return ring

    # ---- read-outs -------------------------------------------------------------------------------------

    @property
    def horizon_span(self) -> int:
        """Bars a forecast waits before it is fully scored (the longer of the two horizons)."""
        return max(self.horizon_bars, self.vol_horizon_bars)

    @property
    def tiers(self) -> list[str]:
        """Tiers with a scored forecast (any symbol), first scored first."""
        return list(dict.fromkeys(t for _, t in self._returns))

    @property
    def symbols(self) -> list[str]:
        """Symbols with a scored forecast, first scored first."""
        return list(dict.fromkeys(s for s, _ in self._returns))

    def scored_bars(self, symbol: str, tier: str) -> int:
        return len(self._returns.get((symbol, tier), ()))

    def ic(self, symbol: str, tier: str) -> float | None:
        """Pearson IC of the tier's return forecasts over `symbol`'s window; None until `min_scored` bars."""
        return self._corr(self._returns.get((symbol, tier)))

    def vol_ic(self, symbol: str, tier: str) -> float | None:
        """Pearson correlation of the tier's volatility forecasts with the realised volatility over
        `symbol`'s window; None until `min_scored` scored vol forecasts (or without a vol head)."""
        return self._corr(self._vols.get((symbol, tier)))

    def _corr(self, pairs: deque[tuple[float, float]] | None) -> float | None:
        if not pairs or len(pairs) < self.min_scored:
            return None
        a = np.asarray(pairs, dtype=np.float64)
        if np.ptp(a[:, 0]) == 0.0 or np.ptp(a[:, 1]) == 0.0:  # a constant side (exact; std() rounds)
            return None
        return float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])

    def regret(self, symbol: str, tier: str) -> float | None:
        """Mean (router's squared error - this tier's) over `symbol`'s window; None before any scored bar."""
        ring = self._regret.get((symbol, tier))
        return float(sum(ring) / len(ring)) if ring else None

    def vol_qlike(self, symbol: str, tier: str) -> float | None:
        """Mean QLIKE of the tier's volatility forecasts over `symbol`'s window; None without any."""
        ring = self._qlike.get((symbol, tier))
        return float(sum(ring) / len(ring)) if ring else None

    def snapshot(self, symbol: str | None = None) -> list[ShadowScore]:
        """The scores now of every scored tier of `symbol` (None: of every symbol, sorted by symbol), tiers
        in the order first scored (an IC computation per symbol and tier: every few bars, not per read)."""
        return [
            ShadowScore(
                symbol=s,
                tier=t,
                window=self.window,
                n=self.scored_bars(s, t),
                ic=self.ic(s, t),
                vol_ic=self.vol_ic(s, t),
                vol_qlike=self.vol_qlike(s, t),
                regret=self.regret(s, t),
            )
            for s, t in sorted(self._returns, key=lambda key: key[0])
            if symbol is None or s == symbol
        ]
