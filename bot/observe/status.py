"""The status page's state: what the running service is doing, kept for `GET /status`.

`StatusBoard` keeps the little state the page needs, fed by the service after each decision (off the
latency path: `observe` is O(1) per bar and memory is bounded by ring buffers); `bot.observe.status_page`'s
`render_status(board, now_ms)` turns it into HTML. `FamilyInfo` describes the tier family in use.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bot.core.decision import DecisionRecord
from bot.core.drift import DriftMonitor
from bot.models.manifest import ReturnSkill
from bot.observe.shadow import ShadowScorer

DAY_MS: Final = 86_400_000
#: The latency stage the tier table summarises (the engine's whole per-bar pipeline).
LATENCY_STAGE: Final = "total"
MINUTE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class FamilyInfo:
    """The tier family the service decides with.

    Attributes:
        manifest_sha256: hex sha256 of the manifest.json bytes ("" when unknown).
        created_ms: the manifest's `created_ms` (epoch ms; 0 = not recorded).
        provenance: the manifest's `provenance` (source, path, symbol, interval, rows, seed...).
        tiers: tier names, manifest order (largest first).
        return_skill: the return head's measured IC and SE (None: not in the manifest, an older family).
    """

    manifest_sha256: str
    created_ms: int
    provenance: Mapping[str, Any]
    tiers: tuple[str, ...]
    return_skill: ReturnSkill | None = None

    @classmethod
    def of_family(cls, family: Any) -> FamilyInfo:
        """From a loaded `bot.models.family.TierFamily` (hashes its manifest.json once)."""
        sha = str(getattr(family, "model_sha", "") or "")
        if not sha:
            try:
                sha = hashlib.sha256((Path(family.models_dir) / "manifest.json").read_bytes()).hexdigest()
            except OSError:
                sha = ""
        m = family.manifest
        return cls(sha, int(m.created_ms), dict(m.provenance), tuple(family.names), m.return_skill)


@dataclass(slots=True)
class _SymbolState:
    recent: deque[DecisionRecord]
    last: DecisionRecord | None = None
    day: int | None = None  # UTC day number (start_ms // DAY_MS) that `day_pnl_usd` sums
    day_pnl_usd: float = 0.0
    lag_bars: int = 0
    lagging: bool = False


@dataclass(slots=True)
class _TierState:
    bars: int = 0
    total_us: deque[float] = field(default_factory=deque)  # replaced by a bounded deque in _tier


class StatusBoard:
    """The status page's state; the service calls `observe` after each decision.

    Args:
        symbols: the configured symbols (shown even before their first decision).
        recent: decisions kept per symbol for the page.
        latency_window: per tier, the last this many `total` latencies that p50/p99 are taken over.
        started_ms: wall-clock epoch ms of start-up (default: now).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        recent: int = 20,
        latency_window: int = 2048,
        started_ms: int | None = None,
    ) -> None:
        if recent < 1 or latency_window < 1:
            raise ValueError(f"recent and latency_window must be >= 1, got {recent}, {latency_window}")
        self.recent = recent
        self.latency_window = latency_window
        self.started_ms = started_ms if started_ms is not None else time.time_ns() // 1_000_000
        self.symbols: dict[str, _SymbolState] = {s: _SymbolState(deque(maxlen=recent)) for s in symbols}
        # paper equity summed over symbols, one point per wall-clock minute (a day of them)
        self.equity_usd = 0.0
        self.equity_minutes: deque[tuple[int, float]] = deque(maxlen=DAY_MS // MINUTE_MS)
        self.tiers: dict[str, _TierState] = {}
        self.regimes: Counter[str] = Counter()
        self.family: FamilyInfo | None = None
        self.shadow: ShadowScorer | None = None  # live IC / regret / vol QLIKE per tier (bot.observe.shadow)
        self.drift: DriftMonitor | None = None  # rolling feature PSI per symbol (bot.core.drift)
        self.drift_known = False  # set_drift was called: drift None then means "unavailable"
        self.bars_total = 0
        self.last_decided_ms: int | None = None  # wall clock of the last decision
        self.reconnects = 0
        self.backfilled_bars = 0

    # ---- feeding (O(1) each) -------------------------------------------------------------------
    def set_family(self, info: FamilyInfo) -> None:
        """The family in use (at start-up, and after a reload); its tiers are listed even with 0 bars."""
        self.family = info
        for name in info.tiers:
            self._tier(name)

    def _tier(self, name: str) -> _TierState:
        st = self.tiers.get(name)
        if st is None:
            st = self.tiers[name] = _TierState(total_us=deque(maxlen=self.latency_window))
        return st

    def _symbol(self, symbol: str) -> _SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            st = self.symbols[symbol] = _SymbolState(deque(maxlen=self.recent))
        return st

    def add(self, symbol: str) -> None:
        """`symbol` joined (a new listing): shown from now on, before its first decision."""
        self._symbol(symbol)

    def remove(self, symbol: str) -> None:
        """`symbol` is no longer run (left out at start-up, delisted, dropped): it leaves the page."""
        self.symbols.pop(symbol, None)

    def observe(self, decision: DecisionRecord, *, now_ms: int) -> None:
        """One decided bar (`now_ms`: wall-clock epoch ms when it was decided)."""
        st = self._symbol(decision.symbol)
        self._add_to_day(st, decision)
        self._set_last(st, decision, now_ms)
        st.recent.append(decision)
        tier = self._tier(decision.tier)
        tier.bars += 1
        total = decision.latency_us.get(LATENCY_STAGE)
        if total is not None:
            tier.total_us.append(total)
        self.regimes[decision.regime] += 1
        self.bars_total += 1
        self.last_decided_ms = now_ms

    def _set_last(self, st: _SymbolState, decision: DecisionRecord, now_ms: int) -> None:
        """The symbol's newest decision; the summed equity's point of this minute (recomputed over all
        symbols once a minute, so rounding never accumulates)."""
        before = st.last.equity_usd if st.last is not None else 0.0
        st.last = decision
        minute = now_ms // MINUTE_MS
        points = self.equity_minutes
        if points and points[-1][0] == minute:
            self.equity_usd += decision.equity_usd - before
            points[-1] = (minute, self.equity_usd)
        else:
            self.equity_usd = math.fsum(
                x.last.equity_usd for x in self.symbols.values() if x.last is not None
            )
            points.append((minute, self.equity_usd))

    @staticmethod
    def _add_to_day(st: _SymbolState, decision: DecisionRecord) -> None:
        day = decision.start_ms // DAY_MS
        if st.day != day:
            st.day, st.day_pnl_usd = day, 0.0
        st.day_pnl_usd += decision.bar_pnl_usd

    def restore(self, symbol: str, decisions: Iterable[DecisionRecord], *, now_ms: int | None = None) -> None:
        """Seed a symbol from the ledger after a restart (oldest first): last decisions, position, today's
        PnL, its equity in the summed equity at `now_ms` (default: now). Tier shares and latencies stay
        'since start-up'."""
        st = self._symbol(symbol)
        last = None
        for d in decisions:
            self._add_to_day(st, d)
            st.recent.append(d)
            last = d
        if last is not None:
            self._set_last(st, last, now_ms if now_ms is not None else time.time_ns() // 1_000_000)

    def set_drift(self, monitor: DriftMonitor | None) -> None:
        """The family's drift monitor (None: the family has no training bins, drift is unavailable)."""
        self.drift, self.drift_known = monitor, True

    def set_lag(self, symbol: str, lag_bars: int, *, lagging: bool) -> None:
        """The decision-lag check's result for `symbol` (`bot.core.liveness`)."""
        st = self._symbol(symbol)
        st.lag_bars, st.lagging = lag_bars, lagging

    def set_feed(self, *, reconnects: int, backfilled_bars: int) -> None:
        """The feed's counters since start-up."""
        self.reconnects, self.backfilled_bars = reconnects, backfilled_bars
