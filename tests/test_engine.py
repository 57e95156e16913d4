"""The pure per-bar engine: the warm-up rehearsal on partial bars never changes a decision."""

from __future__ import annotations

from pathlib import Path

from support import small_config

from bot.config import engine_params
from bot.core.engine import Engine
from bot.core.paper import PaperTrader
from bot.core.stream import PartialBar
from bot.sim.synthetic import SyntheticMarket
from bot.tiers import TierFamily


def test_rehearsal_on_partials_leaves_every_decision_unchanged(trained_family: Path) -> None:
    """Rehearsing each bar on its partial (features, regime, tier, paper on copies) changes no decision."""
    cfg = small_config(market={"symbols": ["SYNTHUSDT"]}, models={"dir": str(trained_family)})
    family = TierFamily.load(trained_family)
    plain = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    rehearsed = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    seen = []
    for step in SyntheticMarket(seed=41).generate(900):
        b = step.bar
        rehearsed.on_partial(PartialBar.of(b, ts_ms=b.start_ms))
        a, r = plain.on_bar(b), rehearsed.on_bar(b)
        assert (a is None) == (r is None)
        if a is not None and r is not None:
            assert (a.regime, a.tier, a.prediction, a.position, a.fills) == (
                r.regime,
                r.tier,
                r.prediction,
                r.position,
                r.fills,
            )
            assert plain.trader.state(b.symbol) == rehearsed.trader.state(b.symbol)
            seen.append(a.tier)
    assert len(seen) > 800
    assert plain.trader.state("SYNTHUSDT") == rehearsed.trader.state("SYNTHUSDT")
