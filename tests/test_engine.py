"""The pure per-bar engine: the warm-up rehearsal on partial bars never changes a decision; a bar-close burst
decided together equals one bar at a time."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from support import small_config

from bot.config import engine_params
from bot.core.bars import Bar, BookTop
from bot.core.engine import Engine
from bot.core.paper import PaperTrader
from bot.core.params import GUESSED_ROUTES
from bot.core.stream import PartialBar
from bot.models.family import TierFamily
from bot.sim.synthetic import SyntheticMarket


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


def _burst_markets(n_symbols: int, n_bars: int) -> list[list[Bar]]:
    """`n_symbols` synthetic markets on one clock (one seed each), their bars per symbol."""
    return [
        [s.bar for s in SyntheticMarket(seed=100 + k, symbol=f"S{k}USDT").generate(n_bars)]
        for k in range(n_symbols)
    ]


@pytest.mark.parametrize("sizing", ["fixed", "vol_target"])
def test_a_burst_decided_together_equals_one_bar_at_a_time(trained_family: Path, sizing: str) -> None:
    """`on_bars` over every symbol's bar of a close (tiers grouped, one model call each) gives records equal
    field by field to `on_bar` per bar (latency aside), with books, warm-up and absorb-only bars mixed in,
    and leaves the same feature, regime and paper state."""
    markets = _burst_markets(7, 700)
    symbols = [m[0].symbol for m in markets]
    cfg = small_config(
        market={"symbols": symbols},
        models={"dir": str(trained_family), "symbols": "any"},
        paper={"sizing": sizing, "fill_price": "mid"},
        regime={"routes": dict(GUESSED_ROUTES)},
    )
    family = TierFamily.load(trained_family)
    one = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    burst = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    tiers: set[str] = set()
    batched_calls = 0
    for t in range(700):
        bars = [m[t] for m in markets]
        if t % 3 == 0:  # a book for some symbols before the close
            for bar in bars[::2]:
                book = BookTop(
                    bar.symbol, bar.start_ms, bar.close * 0.9999, 2.0, bar.close * 1.0001, 1.0 + t % 5
                )
                one.on_book(book)
                burst.on_book(book)
        decide = [t % 50 != k for k in range(len(bars))]  # now and then a bar absorbed only
        expected = [one.on_bar(bar, decide=d) for bar, d in zip(bars, decide, strict=True)]
        got = burst.on_bars(bars, decide=decide)
        assert len(got) == len(expected)
        for e, g in zip(expected, got, strict=True):
            assert (e is None) == (g is None)
            if e is not None and g is not None:
                assert msgspec.structs.replace(e, latency_us={}) == msgspec.structs.replace(g, latency_us={})
                assert set(g.latency_us) == set(e.latency_us)
                tiers.add(g.tier)
        batched_calls += len({g.tier for g in got if g is not None})
    for s in symbols:
        assert one.trader.state(s) == burst.trader.state(s)
        a, b = one._tables, burst._tables
        assert np.array_equal(a.feat[a.rows[s]], b.feat[b.rows[s]], equal_nan=True)
        assert np.array_equal(a.fstate[a.rows[s]], b.fstate[b.rows[s]])
        assert one.regime(s) == burst.regime(s)
    assert len(tiers) >= 2, tiers  # rows of one close went to more than one tier
    assert batched_calls < 650 * len(symbols) / 2


def test_a_burst_of_one_symbol_is_on_bar(trained_family: Path) -> None:
    """N = 1: `on_bars([bar])` is `on_bar(bar)`; a symbol twice in one burst is refused."""
    cfg = small_config(market={"symbols": ["SYNTHUSDT"]}, models={"dir": str(trained_family)})
    family = TierFamily.load(trained_family)
    one = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    burst = Engine(engine_params(cfg), family, PaperTrader(cfg.paper))
    bars = [s.bar for s in SyntheticMarket(seed=47).generate(300)]
    for bar in bars:
        e, (g,) = one.on_bar(bar), burst.on_bars([bar])
        assert (e is None) == (g is None)
        if e is not None and g is not None:
            assert msgspec.structs.replace(e, latency_us={}) == msgspec.structs.replace(g, latency_us={})
    with pytest.raises(ValueError, match="one bar per symbol"):
        burst.on_bars([bars[-1], bars[-1]])
