"""Shadow scoring: every tier's forecast scored when the horizon has passed (live IC, regret, vol QLIKE)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import support

from bot.observe.shadow import ShadowBar, ShadowScorer
from bot.observe.status import StatusBoard
from bot.observe.status_page import render_status


def walk(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))


def test_a_perfect_tier_scores_ic_1_and_beats_the_router() -> None:
    """'oracle' predicts the realised next-bar return, 'zero' predicts nothing and is routed: the oracle's IC
    is 1, the zero tier's is undefined (no variance), and the router (zero) regrets by the oracle's margin."""
    closes = walk(300)
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=3, min_scored=20)
    for i, c in enumerate(closes):
        future = closes[i + 1] / c - 1.0 if i + 1 < len(closes) else 0.0
        sc.on_bar("BTC", float(c), "zero", {"oracle": (future, None), "zero": (0.0, None)})
    assert sc.scored_bars("BTC", "oracle") == 299
    assert sc.ic("BTC", "oracle") == pytest.approx(1.0)
    assert sc.ic("BTC", "zero") is None
    realised = closes[1:] / closes[:-1] - 1.0
    assert sc.regret("BTC", "oracle") == pytest.approx(float(np.mean(realised**2)))
    assert sc.regret("BTC", "zero") == pytest.approx(0.0)


def test_nothing_is_scored_before_the_horizon_and_ic_waits_for_enough_bars() -> None:
    sc = ShadowScorer(horizon_bars=3, vol_horizon_bars=3, min_scored=5)
    closes = walk(10)
    for i, c in enumerate(closes[:3]):
        sc.on_bar("BTC", float(c), "a", {"a": (float(i), None)})
    assert sc.scored_bars("BTC", "a") == 0
    for c in closes[3:7]:
        sc.on_bar("BTC", float(c), "a", {"a": (1.0, None)})
    assert sc.scored_bars("BTC", "a") == 4  # bars 0..3 have their 3-bar return now
    assert sc.ic("BTC", "a") is None  # 4 < min_scored


def test_symbols_are_scored_against_their_own_closes() -> None:
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=2, min_scored=2)
    for a, b in [(100.0, 10.0), (110.0, 9.0), (121.0, 8.1)]:
        sc.on_bar("A", a, "t", {"t": (0.1, None)})
        sc.on_bar("B", b, "t", {"t": (-0.1, None)})
    # A rose 10% per bar, B fell 10%: both forecasts exact (constant per symbol: no IC within a symbol)
    for sym in ("A", "B"):
        assert sc.scored_bars(sym, "t") == 2
        assert sc.regret(sym, "t") == pytest.approx(0.0)
        assert sc.ic(sym, "t") is None
    assert sc.symbols == ["A", "B"]


def test_scores_are_kept_per_symbol() -> None:
    """A tier that forecasts one symbol perfectly and another backwards scores IC +1 on the first and -1 on
    the second (pooled, the two would blur); a snapshot of one symbol holds only its own scores."""
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=2, min_scored=10)
    a, b = walk(80, seed=1), walk(80, seed=2)
    for i in range(80):
        fa = a[i + 1] / a[i] - 1.0 if i + 1 < 80 else 0.0
        fb = b[i + 1] / b[i] - 1.0 if i + 1 < 80 else 0.0
        sc.on_bar("A", float(a[i]), "t", {"t": (fa, None)})
        sc.on_bar("B", float(b[i]), "t", {"t": (-fb, None)})
    assert sc.ic("A", "t") == pytest.approx(1.0)
    assert sc.ic("B", "t") == pytest.approx(-1.0)
    assert [(s.symbol, s.tier, s.n) for s in sc.snapshot("B")] == [("B", "t", 79)]
    assert [s.symbol for s in sc.snapshot()] == ["A", "B"]


def test_vol_qlike_is_zero_for_the_realised_vol_and_positive_otherwise() -> None:
    closes = 100.0 * np.exp(np.cumsum(np.tile([0.01, -0.01], 50)))  # every one-bar log return is +-1%
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=4)
    for c in closes:
        sc.on_bar("BTC", float(c), "exact", {"exact": (0.0, 0.01), "double": (0.0, 0.02)})
    assert sc.vol_qlike("BTC", "exact") == pytest.approx(0.0, abs=1e-12)
    assert sc.vol_qlike("BTC", "double") == pytest.approx(0.25 - math.log(0.25) - 1.0)


def test_the_status_page_shows_the_live_scores() -> None:
    """The shadow table shows each symbol's and tier's live IC and regret once scored, 'collecting' before."""
    board = StatusBoard(["BTC"])
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=3, min_scored=20)
    board.shadow = sc
    closes = walk(60)
    for i, c in enumerate(closes):
        future = closes[i + 1] / c - 1.0 if i + 1 < len(closes) else 0.0
        sc.on_bar("BTC", float(c), "edge", {"edge": (future, None), "late": (0.0, None)})
        if i < 2:
            continue
        board.observe(
            support.decision_record(i, symbol="BTC", prediction=future, close=float(c)), now_ms=i * 300_000
        )
    page = render_status(board, 60 * 300_000)
    assert "regret vs router" in page
    shadow_table = page.split('<table class="shadow">')[1].split("</table>")[0]
    row = re.search(r'<td class="symbol">BTC</td><td class="tier">edge</td>.*?</tr>', shadow_table)
    assert row is not None
    assert '<td class="ic">+1.000</td>' in row.group(0)  # the edge tier's live IC on BTC
    fresh = ShadowScorer(horizon_bars=1, vol_horizon_bars=3, min_scored=20)
    board.shadow = fresh
    assert "collecting (0/20 bars)" in render_status(board, 0)


def test_vol_ic_and_the_snapshot_carry_every_score() -> None:
    """A vol forecast proportional to the realised vol has a vol IC of 1; a snapshot holds each tier's
    scores as the read-outs give them."""
    rng = np.random.default_rng(5)
    sigma = np.repeat(rng.uniform(0.001, 0.01, 40), 5)  # piecewise-constant vol, 5 bars per level
    steps = sigma * np.where(np.arange(sigma.size) % 2 == 0, 1.0, -1.0)  # |log return| = sigma exactly
    closes = 100.0 * np.exp(np.cumsum(steps))
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=1, min_scored=10)
    for i, c in enumerate(closes):
        nxt = float(sigma[i + 1]) if i + 1 < sigma.size else 0.01
        sc.on_bar("BTC", float(c), "good", {"good": (0.0, 2.0 * nxt), "flat": (0.0, 0.005)})
    assert sc.vol_ic("BTC", "good") == pytest.approx(1.0)
    assert sc.vol_ic("BTC", "flat") is None  # a constant forecast has no correlation
    snap = {s.tier: s for s in sc.snapshot()}
    assert set(snap) == {"good", "flat"}
    good = snap["good"]
    assert (good.symbol, good.n, good.window) == ("BTC", sc.scored_bars("BTC", "good"), sc.window)
    assert (good.ic, good.vol_ic, good.vol_qlike, good.regret) == (
        sc.ic("BTC", "good"),
        sc.vol_ic("BTC", "good"),
        sc.vol_qlike("BTC", "good"),
        sc.regret("BTC", "good"),
    )
    assert good.vol_qlike == pytest.approx(0.25 - math.log(0.25) - 1.0)


def test_replaying_the_stored_history_continues_as_if_uninterrupted() -> None:
    """A scorer re-seeded with the last window + horizon bars (one of them without stored forecasts) then fed
    the same live bars ends with the scores of a scorer that never stopped."""
    closes = walk(400, seed=9)
    rng = np.random.default_rng(2)
    preds = rng.normal(0, 1e-3, (400, 2))
    history: list[ShadowBar] = []
    whole = ShadowScorer(horizon_bars=3, vol_horizon_bars=5, window=50, min_scored=5)
    for i, c in enumerate(closes[:300]):
        fc = {} if i == 290 else {"a": (float(preds[i, 0]), 0.002), "b": (float(preds[i, 1]), None)}
        whole.on_bar("BTC", float(c), "a", fc)
        history.append(ShadowBar("BTC", i * 300_000, float(c), "a", fc))
    restarted = ShadowScorer(horizon_bars=3, vol_horizon_bars=5, window=50, min_scored=5)
    assert restarted.replay(history[-(restarted.window + restarted.horizon_span) :]) == 55
    for i, c in enumerate(closes[300:], start=300):
        fc = {"a": (float(preds[i, 0]), 0.002), "b": (float(preds[i, 1]), None)}
        whole.on_bar("BTC", float(c), "a", fc)
        restarted.on_bar("BTC", float(c), "a", fc)
    assert restarted.snapshot() == whole.snapshot()
    assert restarted.ic("BTC", "b") is not None


def test_replay_reseeds_every_symbol_on_its_own() -> None:
    """Two symbols' interleaved history replayed into a fresh scorer gives each symbol the scores of a scorer
    that never stopped."""
    whole = ShadowScorer(horizon_bars=2, vol_horizon_bars=3, window=30, min_scored=5)
    history: list[ShadowBar] = []
    closes = {"A": walk(120, seed=4), "B": walk(120, seed=5)}
    rng = np.random.default_rng(8)
    for i in range(120):
        for sym in ("A", "B"):
            fc = {"t": (float(rng.normal(0, 1e-3)), 0.002)}
            whole.on_bar(sym, float(closes[sym][i]), "t", fc)
            history.append(ShadowBar(sym, i * 300_000, float(closes[sym][i]), "t", fc))
    restarted = ShadowScorer(horizon_bars=2, vol_horizon_bars=3, window=30, min_scored=5)
    restarted.replay(history[-2 * (restarted.window + restarted.horizon_span) :])
    assert restarted.snapshot("A") == whole.snapshot("A")
    assert restarted.snapshot("B") == whole.snapshot("B")
    assert whole.ic("A", "t") != whole.ic("B", "t")
