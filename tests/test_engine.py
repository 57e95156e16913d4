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


def test_auto_routes_serve_the_familys_own_map_and_need_one(trained_family: Path, tmp_path: Path) -> None:
    """routes = "auto": the engine routes by the manifest's chosen map (also after a hot swap); a family
    that chose none is refused with a ModelError naming the fix."""
    import json
    import shutil

    import msgspec
    import pytest

    from bot.core.errors import ModelError

    cfg = small_config(market={"symbols": ["SYNTHUSDT"]}, models={"dir": str(trained_family)})
    cfg = msgspec.structs.replace(cfg, regime=msgspec.structs.replace(cfg.regime, routes="auto"))
    family = TierFamily.load(trained_family)
    assert family.manifest.routes is not None
    engine = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    assert engine.routes == family.manifest.routes.routes
    for step in SyntheticMarket(seed=43).generate(400):
        rec = engine.on_bar(step.bar)
        if rec is not None:
            assert rec.tier == engine.routes[rec.regime]
    old = tmp_path / "old"
    shutil.copytree(trained_family, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["routes"] = None
    (old / "manifest.json").write_text(json.dumps(manifest))
    stale = TierFamily.load(old)
    with pytest.raises(ModelError, match=r'routes = "auto" needs a family .* or set \[regime.routes\]'):
        Engine(engine_params(cfg), stale, PaperTrader(cfg.paper))
    with pytest.raises(ModelError, match="routes"):
        engine.swap_family(stale)
    assert engine.family is family
