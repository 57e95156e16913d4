"""The metrics computed when scraped: per-tier and per-feature summaries over the symbols' state, so the
series count stays bounded at 500 symbols (`bot.observe.metrics` registers `Aggregates`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class Summaries(Protocol):
    """What the aggregates read (`bot.observe.metrics.Metrics`)."""

    def shadow_means(self) -> dict[str, tuple[list[float | None], int]]: ...

    def psi_by_feature(self) -> dict[str, tuple[float, int]]: ...

    def psi_thresholds(self) -> dict[str, float]: ...

    def drifting_count(self) -> int: ...


#: Shadow score gauges (name, help) in `ShadowScore` field order: ic, vol_ic, regret, vol_qlike.
SHADOW_GAUGES: Final = (
    ("progdistill_shadow_ic", "Live IC of each tier's return forecasts over the shadow window"),
    (
        "progdistill_shadow_vol_ic",
        "Live correlation of each tier's volatility forecasts with the realised vol over the shadow window",
    ),
    (
        "progdistill_router_regret",
        "Router's squared error minus this tier's over the shadow window (> 0: tier did better)",
    ),
    (
        "progdistill_shadow_vol_qlike",
        "QLIKE of each tier's volatility forecasts over the shadow window (0 = exact)",
    ),
)


class Aggregates(Collector):
    """The per-tier and per-feature summaries of per-symbol state, computed when scraped."""

    def __init__(self, metrics: Summaries) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        shadow = m.shadow_means()
        families = [
            GaugeMetricFamily(name, f"{text}: the mean over symbols with a measured score.", labels=["tier"])
            for name, text in SHADOW_GAUGES
        ]
        scored = GaugeMetricFamily(
            "progdistill_shadow_symbols", "Symbols with a measured live IC, per tier.", labels=["tier"]
        )
        for tier, (means, n) in sorted(shadow.items()):
            for family, mean in zip(families, means, strict=True):
                if mean is not None:
                    family.add_metric([tier], mean)
            scored.add_metric([tier], n)
        yield from families
        yield scored
        psi_max = GaugeMetricFamily(
            "progdistill_feature_psi_max",
            "The highest Population Stability Index of each model input over symbols (drift window against "
            "the training bins; 0.1 moderate, 0.25 significant shift).",
            labels=["feature"],
        )
        drifting = GaugeMetricFamily(
            "progdistill_feature_drifting_symbols",
            "Symbols on which each model input is drifting now (PSI crossed its threshold, not recovered).",
            labels=["feature"],
        )
        for feature, (top, n) in sorted(m.psi_by_feature().items()):
            psi_max.add_metric([feature], top)
            drifting.add_metric([feature], n)
        yield psi_max
        yield drifting
        threshold = GaugeMetricFamily(
            "progdistill_feature_psi_threshold",
            "The PSI from which a feature warns: [service] drift_psi_warn, or the highest PSI the training "
            "rows themselves reached over the same window, when higher.",
            labels=["feature"],
        )
        for feature, value in sorted(m.psi_thresholds().items()):
            threshold.add_metric([feature], value)
        yield threshold
        yield GaugeMetricFamily(
            "progdistill_drifting_symbols",
            "Symbols with at least one model input drifting now.",
            value=m.drifting_count(),
        )
