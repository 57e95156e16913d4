"""Shadow scoring: every tier's forecast scored when the horizon has passed (live IC, regret, vol QLIKE)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import support

from bot.shadow import ShadowBar, ShadowScorer
from bot.status import StatusBoard, render_status


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
    assert sc.scored_bars("oracle") == 299
    assert sc.ic("oracle") == pytest.approx(1.0)
    assert sc.ic("zero") is None
    realised = closes[1:] / closes[:-1] - 1.0
    assert sc.regret("oracle") == pytest.approx(float(np.mean(realised**2)))
    assert sc.regret("zero") == pytest.approx(0.0)


def test_nothing_is_scored_before_the_horizon_and_ic_waits_for_enough_bars() -> None:
    sc = ShadowScorer(horizon_bars=3, vol_horizon_bars=3, min_scored=5)
    closes = walk(10)
    for i, c in enumerate(closes[:3]):
        sc.on_bar("BTC", float(c), "a", {"a": (float(i), None)})
    assert sc.scored_bars("a") == 0
    for c in closes[3:7]:
        sc.on_bar("BTC", float(c), "a", {"a": (1.0, None)})
    assert sc.scored_bars("a") == 4  # bars 0..3 have their 3-bar return now
    assert sc.ic("a") is None  # 4 < min_scored


def test_symbols_are_scored_against_their_own_closes() -> None:
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=2, min_scored=2)
    for a, b in [(100.0, 10.0), (110.0, 9.0), (121.0, 8.1)]:
        sc.on_bar("A", a, "t", {"t": (0.1, None)})
        sc.on_bar("B", b, "t", {"t": (-0.1, None)})
    # A rose 10% per bar, B fell 10%: both forecasts exact, so the IC over (+0.1, +0.1, -0.1, -0.1) is 1
    assert sc.ic("t") == pytest.approx(1.0)
    assert sc.regret("t") == pytest.approx(0.0)


def test_vol_qlike_is_zero_for_the_realised_vol_and_positive_otherwise() -> None:
    closes = 100.0 * np.exp(np.cumsum(np.tile([0.01, -0.01], 50)))  # every one-bar log return is +-1%
    sc = ShadowScorer(horizon_bars=1, vol_horizon_bars=4)
    for c in closes:
        sc.on_bar("BTC", float(c), "exact", {"exact": (0.0, 0.01), "double": (0.0, 0.02)})
    assert sc.vol_qlike("exact") == pytest.approx(0.0, abs=1e-12)
    assert sc.vol_qlike("double") == pytest.approx(0.25 - math.log(0.25) - 1.0)


def test_the_status_page_shows_the_live_scores() -> None:
    """The tiers table shows each tier's live IC and regret once scored, 'collecting' before."""
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
    tiers_table = page.split('<table class="tiers">')[1].split("</table>")[0]
    row = re.search(r'<td class="tier">edge</td>.*?</tr>', tiers_table)
    assert row is not None
    assert '<td class="ic">+1.000</td>' in row.group(0)  # the edge tier's live IC
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
    assert sc.vol_ic("good") == pytest.approx(1.0)
    assert sc.vol_ic("flat") is None  # a constant forecast has no correlation
    snap = {s.tier: s for s in sc.snapshot()}
    assert set(snap) == {"good", "flat"}
    good = snap["good"]
    assert (good.n, good.window) == (sc.scored_bars("good"), sc.window)
    assert (good.ic, good.vol_ic, good.vol_qlike, good.regret) == (
        sc.ic("good"),
        sc.vol_ic("good"),
        sc.vol_qlike("good"),
        sc.regret("good"),
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
    assert restarted.ic("b") is not None
