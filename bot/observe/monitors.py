"""What the service watches after each decision is out (off the latency path): shadow tiers and drift.

- **Shadow scoring** (`bot.observe.shadow`): every tier forecasts the decided bar from the same features; the
scorer
  rates each once its horizon has passed, per symbol. Forecasts (every bar) and the symbol's scores (every
  10th bar of the symbol) ride along with the ledger's next transaction, and the scores become gauges.
- **Feature drift** (`bot.core.drift`): the bar's feature row goes into a rolling PSI against the deciding
  family's training bins; gauges, and one log line per crossing.

Both continue across a restart (`restore` re-seeds the scorer from the ledger; `replayed` keeps the last
window of feature rows while the service replays its stored bars) and across a hot reload (a new family's
drift monitor starts from the rows seen under the previous one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.config import Config, ServiceConfig
from bot.core.bars import Bar
from bot.core.decision import Decided, DecisionRecord
from bot.core.drift import F64, DriftMonitor, RecentRows
from bot.core.features import FEATURE_INDEX, N_FEATURES
from bot.ledger.writer import Ledger
from bot.models.family import TierFamily
from bot.observe import logs
from bot.observe.metrics import Metrics
from bot.observe.shadow import ShadowScorer
from bot.observe.status import StatusBoard

#: A symbol's shadow scores go to the gauges and the ledger every this many of its decided bars (an IC is a
#: window's work).
SCORE_EVERY_BARS = 10


def drift_monitor(family: object, service: ServiceConfig) -> DriftMonitor | None:
    """The drift monitor for `family`'s training bins (None: its manifest has none, drift unavailable).

    Each feature warns from `drift_psi_warn` or from its training baseline (`train_psi_max`), when higher;
    a baseline measured over another window length than `drift_window_bars` does not apply."""
    ref = family.manifest.drift if isinstance(family, TierFamily) else None
    if ref is None:
        return None
    same_window = ref.window_bars == service.drift_window_bars
    return DriftMonitor(
        {name: (fb.edges, fb.train_frac) for name, fb in ref.features.items()},
        FEATURE_INDEX,
        window_bars=service.drift_window_bars,
        warn_psi=service.drift_psi_warn,
        baseline={
            name: fb.train_psi_max
            for name, fb in ref.features.items()
            if same_window and fb.train_psi_max is not None
        },
    )


class LiveMonitors:
    """Shadow scoring and drift of one service (see the module docstring).

    Args:
        cfg: the running config (horizons, drift window and threshold).
        metrics: where the shadow and drift gauges go.
        status: the status page's board (it reads the scorer and the drift monitor).
    """

    def __init__(self, cfg: Config, metrics: Metrics, status: StatusBoard) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.status = status
        self.shadow = ShadowScorer(
            horizon_bars=cfg.distill.horizon_bars, vol_horizon_bars=cfg.distill.vol_horizon_bars
        )
        status.shadow = self.shadow
        self.drift: DriftMonitor | None = None  # rolling PSI vs the family's training bins
        self._drift_family: object = None
        self._rows = RecentRows(cfg.service.drift_window_bars, N_FEATURES)  # seeds a new family's monitor
        self._scored_bars: Counter[str] = Counter()  # decided bars per symbol since start-up
        self._log: Any = logs.get_logger(component="monitors")

    def restore(self, ledger: Ledger, symbols: Sequence[str]) -> None:
        """After a restart: the shadow windows and the forecasts still waiting for their horizon."""
        sh = self.shadow
        sh.replay(ledger.shadow_history(list(symbols), last_bars=sh.window + sh.horizon_span))

    def replayed(self, symbol: str, x: F64 | None) -> None:
        """A stored bar was replayed at start-up: keep its feature row `x` (None: warming up) for drift."""
        if x is not None:
            self._rows.append(symbol, x)

    def after_burst(self, family: object, decided: Sequence[Decided], ledger: Ledger) -> None:
        """A bar close's decisions (by `family`) are out: shadow-score every tier on all of them (one model
        call per tier over the rows it did not decide), then update drift row by row."""
        rows = [(d.bar, d.record, d.x) for d in decided if d.x is not None]
        if rows and isinstance(family, TierFamily):
            forecasts = self._forecasts(family, rows)
            for (bar, record, _), fc in zip(rows, forecasts, strict=True):
                self._score(bar, record.tier, fc, ledger)
        for d in decided:
            self._drift(family, d.bar.symbol, d.x)

    def _forecasts(
        self, family: TierFamily, rows: list[tuple[Bar, DecisionRecord, F64]]
    ) -> list[dict[str, tuple[float, float | None]]]:
        """Each row's forecast by every tier: the deciding tier's from its record, the others' from one
        `predict_rows` call per tier over the rows it did not decide (equal to `predict` row by row)."""
        out: list[dict[str, tuple[float, float | None]]] = [{} for _ in rows]
        for tier in family.names:
            others = [i for i, (_, d, _) in enumerate(rows) if d.tier != tier]
            if others:
                pred, vol = family.predict_rows(tier, np.stack([rows[i][2] for i in others]))
                preds: list[float] = pred.tolist()
                vols: list[float] | None = None if vol is None or not family.has_vol_head else vol.tolist()
                for j, i in enumerate(others):
                    bar, d, _ = rows[i]
                    v = None if vols is None else vols[j] * family.vol_factor(tier, bar.symbol, d.regime)
                    out[i][tier] = (preds[j], v)
            for i, (_, d, _) in enumerate(rows):
                if d.tier == tier:
                    out[i][tier] = (d.prediction, d.vol_forecast)
        return out

    def _score(
        self, bar: Bar, tier: str, forecasts: dict[str, tuple[float, float | None]], ledger: Ledger
    ) -> None:
        """Score `bar` (decided by `tier`) and stage its forecasts and, every SCORE_EVERY_BARS, scores."""
        self.shadow.on_bar(bar.symbol, bar.close, tier, forecasts)
        self._scored_bars[bar.symbol] += 1
        scores = []
        if self._scored_bars[bar.symbol] % SCORE_EVERY_BARS == 0:
            scores = self.shadow.snapshot(bar.symbol)
            for sc in scores:
                self.metrics.shadow(sc)
        ledger.stage_shadow(bar.symbol, bar.start_ms, forecasts, scores)

    def _drift(self, family: object, symbol: str, x: F64 | None) -> None:
        """The bar's feature row into the rolling PSI. A new family (start-up, reload) brings its own
        training bins: its monitor starts from the last window of rows (replayed from the ledger at
        start-up, or seen under the previous family)."""
        if x is not None:
            self._rows.append(symbol, x)
        if family is not self._drift_family:
            self._drift_family = family
            self.drift = drift_monitor(family, self.cfg.service)
            self.status.set_drift(self.drift)
            if self.drift is not None:
                self.metrics.drift_thresholds(self.drift.thresholds())
                for held in self._rows.symbols:
                    for row in self._rows.rows(held):
                        self._drift_row(self.drift, held, row)
            return
        if self.drift is not None and x is not None:
            self._drift_row(self.drift, symbol, x)

    def _drift_row(self, drift: DriftMonitor, symbol: str, x: F64) -> None:
        up = drift.update(symbol, x)
        if up.psi is None:
            return
        self.metrics.drift(
            symbol, dict(zip(drift.features, up.psi.tolist(), strict=True)), drifting=drift.drifting(symbol)
        )
        for feature, psi in up.crossed:
            self._log.warning(
                logs.DRIFT,
                symbol=symbol,
                feature=feature,
                psi=round(psi, 4),
                threshold=round(drift.threshold_of(feature), 4),
                rows=up.rows,
            )
        for feature, psi in up.recovered:
            self._log.info(logs.DRIFT_RECOVERED, symbol=symbol, feature=feature, psi=round(psi, 4))
