"""offline.train: the blended-target identity, schedules, parameter counts, and a tiny distillation run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bot.config import Config, load_config, parse_config
from bot.core.features import FEATURE_NAMES, FEATURE_SETS
from offline.data import load_dataset
from offline.distill import DistillResult, run_distillation
from offline.train import (
    blend_constant,
    blended_target,
    hit_rate,
    information_coefficient,
    param_count,
    r2,
    stage_alpha,
    stage_temperature,
    two_term_loss,
)

TINY = {
    "tiers": {
        "research": {"layers": 2, "width": 32, "features": "research"},
        "staging": {"layers": 2, "width": 16, "features": "no_calendar"},
        "production": {"layers": 1, "width": 12, "features": "price_volume"},
        "edge": {"layers": 1, "width": 8, "features": "seed"},
    },
    "distill": {
        "synthetic_bars": 2500,
        "embargo_bars": 10,
        "epochs": 4,
        "patience": 2,
        "batch_size": 128,
        "teacher_folds": 0,  # the held-out design these tests pin (the default is 2)
        "teacher_l2": [],
    },
}

CONFIG_TOML = Path(__file__).resolve().parents[1] / "config.toml"

_vec = arrays(np.float64, 16, elements=st.floats(-10, 10))


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 1.0), _vec, _vec, _vec)
def test_two_term_loss_equals_blended_mse_plus_constant(
    alpha: float, s: np.ndarray, t: np.ndarray, y: np.ndarray
) -> None:
    """alpha*MSE(s,t) + (1-alpha)*MSE(s,y) == MSE(s, alpha*t + (1-alpha)*y) + alpha*(1-alpha)*MSE(t,y)."""
    blended = float(np.mean((s - blended_target(alpha, t, y)) ** 2))
    assert two_term_loss(alpha, s, t, y) == pytest.approx(
        blended + blend_constant(alpha, t, y), rel=1e-9, abs=1e-9
    )


def test_blended_loss_has_the_same_gradient_as_the_two_term_loss() -> None:
    """The constant does not depend on the student: both losses have the same gradient in s."""
    rng = np.random.default_rng(0)
    s, t, y = rng.normal(size=(3, 50))
    alpha = 0.37
    g_two = 2.0 / s.size * (alpha * (s - t) + (1 - alpha) * (s - y))
    g_blend = 2.0 / s.size * (s - blended_target(alpha, t, y))
    np.testing.assert_allclose(g_two, g_blend, atol=1e-15)
    eps = 1e-6
    e = np.zeros_like(s)
    e[3] = eps
    num = (two_term_loss(alpha, s + e, t, y) - two_term_loss(alpha, s - e, t, y)) / (2 * eps)
    assert num == pytest.approx(g_blend[3], rel=1e-5)


def test_linear_alpha_and_temperature_schedules() -> None:
    """Linear alpha_k = alpha_max(1-k/N) and T_k = t_max(1-k/N)^gamma decrease to 0 at the last stage."""
    assert [stage_alpha(k, 3, 0.9, schedule="linear") for k in (1, 2, 3)] == pytest.approx([0.6, 0.3, 0.0])
    assert stage_alpha(2, 2, 0.8, schedule="linear") == 0.0
    assert [stage_temperature(k, 4, 4.0, 2.0) for k in (1, 2, 4)] == pytest.approx([2.25, 1.0, 0.0])


def test_constant_alpha_schedule_never_reaches_zero() -> None:
    """Constant alpha_k = alpha_max at every stage, the last one included (the default schedule)."""
    assert [stage_alpha(k, 3, 0.9, schedule="constant") for k in (1, 2, 3)] == [0.9, 0.9, 0.9]
    assert stage_alpha(1, 1, 0.8, schedule="constant") == 0.8
    assert Config().distill.alpha_schedule == "linear"


def test_unknown_alpha_schedule_is_rejected() -> None:
    """A schedule name outside linear/constant raises, naming the value that came."""
    with pytest.raises(ValueError, match="'linear' or 'constant', got 'cosine'"):
        stage_alpha(1, 3, 0.8, schedule="cosine")  # type: ignore[arg-type]  # the check under test


def test_default_tier_parameter_counts_strictly_decrease() -> None:
    """The default family's parameter counts (two heads, each tier's own feature set) strictly decrease, the
    teacher sees every feature and the edge tier has >= 50x fewer parameters than the teacher."""
    for cfg in (Config(), load_config(CONFIG_TOML)):
        tiers = list(cfg.tiers.values())
        counts = [
            param_count(len(FEATURE_SETS[t.features]), (t.width,) * t.layers, n_outputs=2) for t in tiers
        ]
        assert counts == sorted(counts, reverse=True)
        assert len(set(counts)) == len(counts)
        assert FEATURE_SETS[tiers[0].features] == FEATURE_NAMES
        assert counts[0] >= 50 * counts[-1]


def test_metrics_on_known_values() -> None:
    """r2, IC and hit rate give the textbook values on hand-made inputs."""
    y = np.array([1.0, -2.0, 3.0, -4.0])
    assert r2(y, y) == 1.0
    assert r2(y, np.full(4, y.mean())) == 0.0
    assert information_coefficient(y, y) == pytest.approx(1.0)
    assert information_coefficient(-y, y) == pytest.approx(-1.0)
    assert hit_rate(np.array([1.0, 1.0, 1.0, 1.0]), y) == 0.5


@pytest.fixture(scope="module")
def tiny_run() -> tuple[Config, DistillResult]:
    cfg = parse_config({**TINY, "distill": {**TINY["distill"], "alpha_schedule": "constant"}})
    ds = load_dataset("synthetic", cfg.distill)
    return cfg, run_distillation(ds, cfg.tiers, cfg.distill, epochs=cfg.distill.epochs, seed=0)


def test_tiny_run_trains_every_recipe_and_picks_best_on_validation(
    tiny_run: tuple[Config, DistillResult],
) -> None:
    """Each student size has progressive (+/- transfer), one-shot, scratch; the pick is the best validation
    score, the mean val R2 of the return and vol heads (each in the metrics)."""
    _, res = tiny_run
    assert [c.variant for c in res.candidates["research"]] == ["teacher"]
    for name in ("staging", "production", "edge"):
        variants = {c.variant for c in res.candidates[name]}
        assert variants == {"progressive", "progressive_no_transfer", "one_shot", "scratch"}
        for c in res.candidates[name]:
            m = c.metrics
            assert m["val_score"] == pytest.approx(0.5 * (m["val_r2"] + m["val_vol_r2"]))
        best = max(c.metrics["val_score"] or -1e9 for c in res.candidates[name])
        assert res.chosen[name].metrics["val_score"] == best
    params = [res.chosen[n].model.params for n in res.tier_names]
    assert params == sorted(params, reverse=True)
    assert res.chosen["edge"].model.features == ("ret_1", "range_vol", "vol_chg", "mom_5")


def test_tiny_run_alphas_weights_and_metrics(tiny_run: tuple[Config, DistillResult]) -> None:
    """Constant schedule: stage alphas and one-shot's alpha_1, best-epoch weights kept, metrics finite."""
    _, res = tiny_run
    by = {(c.tier, c.variant): c for cands in res.candidates.values() for c in cands}
    for name in ("staging", "production", "edge"):
        assert by[(name, "progressive")].alpha == 0.8
        assert by[(name, "progressive_no_transfer")].alpha == 0.8
        assert by[(name, "one_shot")].alpha == 0.8
        assert by[(name, "scratch")].alpha == 0.0
    # one-shot at the first student size is chain stage 1 (same alpha, same run)
    assert by[("staging", "one_shot")].model is by[("staging", "progressive")].model
    assert (res.info["alpha_schedule"], res.info["alpha_max"]) == ("constant", 0.8)
    for cands in res.candidates.values():
        for c in cands:
            assert c.fit.val_mse == min(c.fit.history)
            assert c.fit.best_epoch == c.fit.history.index(min(c.fit.history)) + 1
            for k in ("test_r2", "fidelity_r2", "ic", "hit_rate", "distill_loss", "train_s"):
                assert np.isfinite(c.metrics[k]), (c.variant, k)
    teacher = res.chosen["research"]
    assert teacher.metrics["fidelity_r2"] == 1.0
    assert res.info["transfer_rows"] == res.info["student_rows"]
    assert res.info["teacher_rows"] + res.info["student_rows"] == res.info["train_rows"]


def test_linear_schedule_run_ends_the_chain_on_labels_only() -> None:
    """Linear: alphas 2/3, 1/3, 0 x alpha_max, one-shot uses alpha_1, the last no-transfer stage = scratch."""
    data = {**TINY, "distill": {**TINY["distill"], "alpha_schedule": "linear", "transfer_multiplier": 0.0}}
    cfg = parse_config(data)
    ds = load_dataset("synthetic", cfg.distill)
    res = run_distillation(ds, cfg.tiers, cfg.distill, epochs=2, seed=0)
    by = {(c.tier, c.variant): c for cands in res.candidates.values() for c in cands}
    alphas = [by[(n, "progressive_no_transfer")].alpha for n in ("staging", "production", "edge")]
    assert alphas == pytest.approx([0.8 * 2 / 3, 0.8 / 3, 0.0])
    assert by[("edge", "one_shot")].alpha == pytest.approx(0.8 * 2 / 3)
    assert res.info["alpha_schedule"] == "linear"
    last, scratch = by[("edge", "progressive_no_transfer")], by[("edge", "scratch")]
    assert last.metrics["test_r2"] == scratch.metrics["test_r2"]


def test_out_of_fold_teacher_mode_runs() -> None:
    """teacher_folds=2: the teacher and the students both learn all training rows (OOF teacher labels)."""
    data = {
        **TINY,
        "distill": {**TINY["distill"], "teacher_folds": 2, "transfer_multiplier": 0.0, "epochs": 2},
    }
    cfg = parse_config(data)
    ds = load_dataset("synthetic", cfg.distill)
    res = run_distillation(ds, cfg.tiers, cfg.distill, epochs=2, seed=1)
    assert res.info["teacher_rows"] == res.info["student_rows"] == len(ds.splits.train)
    assert {c.variant for c in res.candidates["edge"]} == {"progressive_no_transfer", "one_shot", "scratch"}


def test_teacher_l2_is_chosen_on_validation() -> None:
    """[distill] teacher_l2: one teacher per candidate, the lowest validation MSE is kept and recorded; the
    teacher trains with teacher_learning_rate / teacher_batch_size; the students keep l2, learning_rate and
    batch_size."""
    data = {
        **TINY,
        "distill": {**TINY["distill"], "teacher_l2": [1e-4, 50.0], "transfer_multiplier": 0.0},
    }
    cfg = parse_config(data)
    ds = load_dataset("synthetic", cfg.distill)
    res = run_distillation(ds, cfg.tiers, cfg.distill, epochs=3, seed=0)
    search = res.info["teacher_l2_val_mse"]
    assert set(search) == {"0.0001", "50", "chosen"}
    best = min(("0.0001", "50"), key=lambda k: search[k])
    assert search["chosen"] == float(best)
    assert res.chosen["research"].fit.val_mse == search[best]
    assert res.chosen["research"].model.mlp.alpha == float(best)
    assert res.chosen["edge"].model.mlp.alpha == cfg.distill.l2
    # the teacher's own step size and batch; the students keep learning_rate / batch_size
    teacher_mlp, edge_mlp = res.chosen["research"].model.mlp, res.chosen["edge"].model.mlp
    n_teacher = res.info["teacher_rows"]
    assert (teacher_mlp.learning_rate_init, teacher_mlp.batch_size) == (3e-4, min(1024, n_teacher))
    assert (edge_mlp.learning_rate_init, edge_mlp.batch_size) == (1e-3, 128)


def test_pooled_run_scores_every_symbol_on_its_own(tmp_path: Path) -> None:
    """A run on two pooled symbols records them, scores the vol head per symbol (vol_r2_sym, also for the
    HAR baselines) and reports that column."""
    from offline.data import load_pooled, synthetic_bars
    from offline.report import format_table

    paths = []
    for k, seed in enumerate((1, 2)):
        p = tmp_path / f"S{k}.csv"
        rows = [
            f"{b.start_ms},{b.open},{b.high},{b.low},{b.close},{b.volume}\n"
            for b in synthetic_bars(1800, seed=seed)
        ]
        p.write_text("start_ms,open,high,low,close,volume\n" + "".join(rows), encoding="utf-8")
        paths.append(p)
    data = {**TINY, "distill": {**TINY["distill"], "transfer_multiplier": 0.0}}
    cfg = parse_config(data)
    ds = load_pooled(paths, cfg.distill, symbols=["AAAUSDT", "BBBUSDT"])
    res = run_distillation(ds, cfg.tiers, cfg.distill, epochs=2, seed=0)
    assert res.info["pooled_symbols"] == 2
    for c in (res.chosen["research"], res.chosen["edge"]):
        assert np.isfinite(c.metrics["vol_r2_sym"])
        assert c.metrics["vol_r2_sym"] != c.metrics["vol_r2"]
    assert np.isfinite(res.info["vol_baselines"]["har_tod"]["vol_r2_sym"])
    report = {"info": res.info, "candidates": [], "vol_vs_har": {}}
    assert "vol R2/sym" in format_table(report)


def test_return_skill_se_is_1_over_sqrt_n_without_overlap_and_grows_with_it() -> None:
    """The IC is Spearman's; its SE is ~1/sqrt(n) for independent 1-bar rows, counts pooled symbols at one bar
    time as one observation, and widens for overlapping multi-bar returns."""
    from offline.evaluate import rank_products, return_skill
    from offline.train import information_coefficient

    rng = np.random.default_rng(4)
    n = 4000
    x, y = rng.normal(size=n), rng.normal(size=n)
    products = rank_products(x, y)
    ic, se, rows = return_skill(products, np.arange(n), horizon_bars=1)
    assert ic == pytest.approx(information_coefficient(x, y))
    assert rows == n
    assert se == pytest.approx(1.0 / math.sqrt(n), rel=0.1)
    # two symbols sharing each bar time whose forecasts and returns co-move: half the independent bars
    twin = np.repeat(np.arange(n // 2), 2)
    x_twin = np.repeat(rng.normal(size=n // 2), 2) + 0.1 * rng.normal(size=n)
    y_twin = np.repeat(rng.normal(size=n // 2), 2) + 0.1 * rng.normal(size=n)
    _, se_twin, _ = return_skill(rank_products(x_twin, y_twin), twin, horizon_bars=1)
    assert se_twin == pytest.approx(math.sqrt(2.0 / n), rel=0.15)
    # 10-bar overlapping returns of an unrelated forecast: the SE must widen (well beyond 1/sqrt(n))
    r = rng.normal(size=n + 9)
    y10 = np.convolve(r, np.ones(10), "valid")
    x10 = np.convolve(rng.normal(size=n + 9), np.ones(10), "valid")
    _, se10, _ = return_skill(rank_products(x10, y10), np.arange(n), horizon_bars=10)
    assert se10 > 1.8 / math.sqrt(n)
    assert return_skill(np.zeros(0), np.zeros(0, dtype=np.int64), horizon_bars=1) == (0.0, 0.0, 0)
