"""What the engine needs of a tier family, as protocols: `bot.models.family.TierFamily` implements them all,
the backtest's cached family (`bot.sim.backtest_cache`) the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


class Predictor(Protocol):
    """What the engine needs of a tier family (bot.models.family.TierFamily): tier + feature row ->
    prediction."""

    #: identifies the family in every decision record (hex sha256 of its manifest)
    model_sha: str

    @property
    def regime_calibration(self) -> Mapping[str, Any]:
        """The regime detector's calibrated thresholds (stored with the models)."""
        ...

    @property
    def auto_routes(self) -> Mapping[str, str] | None:
        """The routes the family chose at distillation (`[regime] routes = "auto"`); None: none chosen."""
        ...

    def check_routes(self, routes: Mapping[str, str] | str) -> None:
        """Raise when a routed tier is missing (or "auto" and the family chose no routes)."""
        ...

    def predict(self, tier: str, x: npt.NDArray[np.float64]) -> float:
        """The tier's prediction for one feature row."""
        ...

    def warm(self, tier: str) -> None:
        """Run the tier once on a throwaway row so its next call is hot."""
        ...

    @property
    def has_vol_head(self) -> bool:
        """True when every tier also forecasts volatility (`predict_vol`)."""
        ...

    def predict_vol(self, tier: str, x: npt.NDArray[np.float64]) -> float | None:
        """The tier's forecast per-bar volatility (fraction), or None when the family has no vol head."""
        ...

    def vol_factor(self, tier: str, symbol: str, regime: str) -> float:
        """Multiplier of the tier's vol for a bar of `symbol` in `regime` (its variance calibration)."""
        ...


@runtime_checkable
class RowsPredictor(Protocol):
    """A family that predicts many rows of one tier in one model call (bot.models.family.TierFamily); the
    engine's bar-close burst uses it when the family has it, else one `predict` per row."""

    def predict_rows(
        self, tier: str, x: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Each row's prediction and graph vol (None without a vol head), equal to `predict` and
        `predict_vol` on the row alone."""
        ...


@runtime_checkable
class PairPredictor(Protocol):
    """A family that gives a row's prediction and graph vol in one call (bot.models.family.TierFamily); the
    engine's single-symbol path uses it when the family has it, else `predict` then `predict_vol`."""

    def predict_pair(self, tier: str, x: npt.NDArray[np.float64]) -> tuple[float, float | None]:
        """(`predict`, `predict_vol`) of one full feature row, from one model run."""
        ...
