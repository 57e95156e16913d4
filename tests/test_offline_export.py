"""offline.export and pipeline: ONNX parity, the manifest schema field by field, hashes, atomic output."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bot.config import Config, parse_config
from bot.core.errors import DataError, ModelError
from bot.core.features import FEATURE_SETS, FEATURE_VERSION
from offline.data import load_dataset
from offline.export import check_parity, onnx_predict, tier_to_onnx
from offline.pipeline import pipeline_distill

TINY: dict[str, Any] = {
    "tiers": {
        "research": {"layers": 2, "width": 32, "features": "research"},
        "staging": {"layers": 2, "width": 16, "features": "no_calendar"},
        "production": {"layers": 1, "width": 12, "features": "price_volume"},
        "edge": {"layers": 1, "width": 8, "features": "seed"},
    },
    "distill": {"synthetic_bars": 2500, "embargo_bars": 10, "epochs": 3, "patience": 2, "batch_size": 128},
}


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, dict[str, Any]]:
    cfg = parse_config(TINY)
    out = tmp_path_factory.mktemp("fam") / "models"
    report = pipeline_distill(cfg, data="synthetic", out_dir=out, seed=3)
    return cfg, out, report


def test_manifest_schema_every_field(family: tuple[Config, Path, dict[str, Any]]) -> None:
    """manifest.json has exactly the documented top-level, tier, metrics, provenance and versions fields."""
    cfg, out, _ = family
    m = json.loads((out / "manifest.json").read_text())
    assert set(m) == {
        "schema_version",
        "created_ms",
        "feature_version",
        "target",
        "heads",
        "tiers",
        "regime_calibration",
        "provenance",
        "versions",
        "drift",
        "return_skill",
        "routes",
    }
    assert set(m["drift"]) == {"method", "bins", "rows", "window_bars", "features"}
    assert m["heads"] == {
        "return": {"horizon_bars": 1, "unit": "return", "output_name": "y"},
        "vol": {"horizon_bars": 12, "unit": "rms_log_return_per_bar", "output_name": "vol"},
    }
    assert m["schema_version"] == 1
    assert isinstance(m["created_ms"], int)
    assert m["created_ms"] > 1_600_000_000_000
    assert m["feature_version"] == FEATURE_VERSION
    assert m["target"] == {"horizon_bars": 1, "unit": "return"}
    assert [t["name"] for t in m["tiers"]] == list(cfg.tiers)
    tier_keys = {
        "name",
        "stage",
        "file",
        "sha256",
        "layers",
        "width",
        "hidden",
        "params",
        "compression",
        "feature_set",
        "features",
        "input_name",
        "output_name",
        "recipe",
        "alpha",
        "temperature",
        "metrics",
        "vol_var_scale",
        "vol_var_scale_by_symbol",
        "vol_var_scale_by_regime",
    }
    metric_keys = {"test_r2", "r2_retention", "fidelity_r2", "ic", "hit_rate", "distill_loss", "train_s"}
    metric_keys |= {"vol_r2", "vol_ic", "vol_qlike", "vol_qlike_bc", "vol_qlike_served"}
    prev_params = None
    for stage, t in enumerate(m["tiers"]):
        assert set(t) == tier_keys
        tc = cfg.tiers[t["name"]]
        assert t["stage"] == stage
        assert t["file"] == f"{t['name']}.onnx"
        assert t["layers"] == tc.layers
        assert t["width"] == tc.width
        assert t["hidden"] == [tc.width] * tc.layers
        assert t["feature_set"] == tc.features
        assert t["features"] == list(FEATURE_SETS[tc.features])
        assert (t["input_name"], t["output_name"]) == ("x", "y")
        assert t["recipe"] == ("teacher" if stage == 0 else t["recipe"])
        assert t["recipe"] in {"teacher", "progressive", "one_shot", "scratch"}
        assert set(t["metrics"]) == metric_keys
        assert all(isinstance(v, float) or v is None for v in t["metrics"].values())
        assert 0.0 <= t["alpha"] <= 1.0
        assert t["temperature"] >= 0.0
        assert 0.0 < t["vol_var_scale"] < 50.0  # fitted on validation rows, folded into the graph's vol
        if prev_params is not None:
            assert t["params"] < prev_params
            assert t["compression"] > 1.0
        prev_params = t["params"]
    assert m["tiers"][0]["compression"] == 1.0
    assert m["tiers"][0]["recipe"] == "teacher"
    prov = m["provenance"]
    assert set(prov) >= {
        "source",
        "path",
        "symbol",
        "interval",
        "first_start_ms",
        "last_start_ms",
        "rows",
        "seed",
    }
    assert prov["source"] == "synthetic"
    assert prov["rows"] == 2500
    assert prov["interval"] == "5"
    assert prov["last_start_ms"] - prov["first_start_ms"] == 2499 * 300_000
    assert set(m["versions"]) >= {"python", "numpy", "scikit-learn", "onnxruntime", "skl2onnx"}
    assert isinstance(m["regime_calibration"], dict)
    assert m["regime_calibration"]


def test_files_hash_and_load(family: tuple[Config, Path, dict[str, Any]]) -> None:
    """Each ONNX file's sha256 matches the manifest; it loads as x float32 [N,n] -> y, vol float32 [N,1]."""
    _, out, _ = family
    m = json.loads((out / "manifest.json").read_text())
    for t in m["tiers"]:
        blob = (out / t["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == t["sha256"]
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        outp, volp = sess.get_outputs()
        assert (inp.name, inp.type, inp.shape[1]) == ("x", "tensor(float)", len(t["features"]))
        assert (outp.name, outp.type, outp.shape[1]) == ("y", "tensor(float)", 1)
        assert (volp.name, volp.type, volp.shape[1]) == ("vol", "tensor(float)", 1)
        props = {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}
        assert json.loads(props["features"]) == t["features"]
        assert props["feature_version"] == FEATURE_VERSION
    assert {p.name for p in out.iterdir()} == {
        *(f"{n}.onnx" for n in TINY["tiers"]),
        "manifest.json",
        "report.json",
        "report.txt",
        "report.png",
    }
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnx_outputs_raw_returns_equal_to_sklearn() -> None:
    """ONNX (scaling inside the graph) equals the scikit-learn model on held-out rows, in raw return units."""
    cfg = parse_config(TINY)
    ds = load_dataset("synthetic", cfg.distill)
    from offline.distill import run_distillation

    res = run_distillation(ds, cfg.tiers, cfg.distill, epochs=2, seed=0)
    X = ds.X[ds.splits.test]
    for name, cand in res.chosen.items():
        blob = tier_to_onnx(cand.model, name=name).SerializeToString()
        err = check_parity(cand.model, blob, X, atol=cfg.distill.onnx_atol, name=name)
        assert err <= 1e-6
        got = onnx_predict(blob, X[:, cand.model.columns].astype(np.float32))
        assert np.std(got) > 0.0
        assert abs(np.mean(got)) < 0.01  # raw returns, not standardised units
        broken = copy.copy(cand.model)
        broken.y_mean += 1e-3  # the in-memory model no longer matches the graph
        with pytest.raises(ModelError, match=f"{name}: ONNX and scikit-learn disagree"):
            check_parity(broken, blob, X, atol=cfg.distill.onnx_atol, name=name)


def test_failed_run_leaves_existing_output_untouched(tmp_path: Path, trained_family: Path) -> None:
    """A run that fails (bad data) writes nothing and leaves a previous tier family as it was."""
    out = tmp_path / "models"
    shutil.copytree(trained_family, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "X_5m.csv"
    bad.write_text("start_ms,open,high,low,close,volume\n1,1,1,1,1,1\n1,1,1,1,1,1\n")
    with pytest.raises(DataError, match="line 3: duplicate"):
        pipeline_distill(parse_config(TINY), data=bad, out_dir=out)
    assert [p.name for p in tmp_path.iterdir() if p.name != bad.name] == ["models"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_vol_output_is_exp_of_the_log_vol_head_and_equals_sklearn() -> None:
    """The vol output is exp(unscaled log-vol head) * sqrt(validation variance scale) inside the graph, equal
    to scikit-learn's in natural units; a model whose vol scaling drifts fails the parity check naming it."""
    cfg = parse_config(TINY)
    ds = load_dataset("synthetic", cfg.distill)
    from offline.distill import run_distillation

    res = run_distillation(ds, cfg.tiers, cfg.distill, epochs=2, seed=0)
    X = ds.X[ds.splits.test]
    for name, cand in res.chosen.items():
        onx = tier_to_onnx(cand.model, name=name)
        assert [o.name for o in onx.graph.output] == ["y", "vol"]
        assert any(n.op_type == "Exp" and n.output == ["vol_uncalibrated"] for n in onx.graph.node)
        assert cand.model.vol_var_scale == cand.metrics["vol_var_scale"] != 1.0
        blob = onx.SerializeToString()
        assert check_parity(cand.model, blob, X, atol=cfg.distill.onnx_atol, name=name) <= 1e-6
        got = onnx_predict(blob, X[:, cand.model.columns].astype(np.float32), output="vol")
        log_vol = cand.model.predict_log_vol(X.astype(np.float32).astype(np.float64))
        want = np.exp(log_vol) * np.sqrt(cand.model.vol_var_scale)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
        assert np.all(got > 0.0)
        assert 1e-5 < float(np.median(got)) < 0.1  # a per-bar RMS log return, not log or standardised units
        broken = copy.copy(cand.model)
        assert broken.vol_mean is not None
        broken.vol_mean += 0.01  # 1% off in vol: the graph no longer matches
        with pytest.raises(ModelError, match=f"{name}: ONNX and scikit-learn disagree on output 'vol'"):
            check_parity(broken, blob, X, atol=cfg.distill.onnx_atol, name=name)


def test_report_has_the_har_baselines(family: tuple[Config, Path, dict[str, Any]]) -> None:
    """The report scores HAR-RV and HAR-RV + hour-of-day on the test rows and says which tiers beat them."""
    _, out, report = family
    bases = report["info"]["vol_baselines"]
    assert set(bases) == {"har", "har_tod"}
    for base in bases.values():
        assert {"vol_r2", "vol_ic", "vol_qlike", "vol_qlike_bc", "qlike_scale"} <= set(base)
        assert base["vol_r2"] > 0.0  # the synthetic market's volatility clusters: HAR has skill
    assert set(report["vol_vs_har"]) == {"har", "har_tod"}
    text = (out / "report.txt").read_text()
    assert "HAR-RV + hour" in text
    assert "tiers beating HAR-RV (vol R2" in text
    for row in report["candidates"]:
        assert row["metrics"]["vol_qlike_bc"] > 0.0


def test_served_vol_carries_the_validation_variance_scale(
    family: tuple[Config, Path, dict[str, Any]],
) -> None:
    """Each graph's `vol` output is Exp(log-vol head) times sqrt(vol_var_scale), the manifest's scale."""
    _, out, _ = family
    m = json.loads((out / "manifest.json").read_text())
    for t in m["tiers"]:
        graph = onnx.load(str(out / t["file"])).graph
        (node,) = [n for n in graph.node if "vol" in n.output]
        assert node.op_type == "Mul"
        (init,) = [i for i in graph.initializer if i.name == "vol_calibration"]
        assert onnx.numpy_helper.to_array(init)[0] == pytest.approx(np.sqrt(t["vol_var_scale"]), rel=1e-6)
        assert t["metrics"]["vol_qlike_served"] is not None


def test_routes_are_the_cheapest_tier_keeping_up_with_the_teacher(
    family: tuple[Config, Path, dict[str, Any]],
) -> None:
    """manifest routes: per regime the cheapest tier within the QLIKE tolerance (+ 2 SE of the paired
    difference) of the teacher on the validation rows, and within the IC tolerance when the teacher's
    return head has skill; the teacher when the regime has too few rows; the table behind the choice and
    each tier's variance scale per regime."""
    from bot.core.params import REGIME_NAMES
    from offline.routes import MIN_ROWS

    cfg, out, report = family
    m = json.loads((out / "manifest.json").read_text())
    choice = m["routes"]
    teacher = m["tiers"][0]["name"]
    assert set(choice["routes"]) == set(REGIME_NAMES)
    assert (choice["qlike_tolerance"], choice["ic_tolerance"]) == (
        cfg.distill.route_qlike_tolerance,
        cfg.distill.route_ic_tolerance,
    )
    assert choice["ic_used"]  # the synthetic market's planted signal: the return head has skill
    assert sum(choice["table"][r][teacher]["n_rows"] for r in REGIME_NAMES) == report["info"]["val_rows"]

    def keeps_up(s: dict[str, Any], ref: dict[str, Any]) -> bool:
        slack = choice["qlike_tolerance"] * ref["vol_qlike"] + 2.0 * (s["vol_qlike_diff_se"] or 0.0)
        return s["vol_qlike"] - ref["vol_qlike"] <= slack and s["ic"] >= ref["ic"] - choice["ic_tolerance"]

    for regime in REGIME_NAMES:
        scores = choice["table"][regime]
        assert set(scores) == {t["name"] for t in m["tiers"]}
        routed = choice["routes"][regime]
        if scores[teacher]["n_rows"] < MIN_ROWS:
            assert routed == teacher
            continue
        assert all(sc["vol_qlike_diff_se"] > 0 for t, sc in scores.items() if t != teacher)
        assert keeps_up(scores[routed], scores[teacher])
        cheaper = [t for t, sc in scores.items() if sc["multiply_adds"] < scores[routed]["multiply_adds"]]
        assert not any(keeps_up(scores[t], scores[teacher]) for t in cheaper), (regime, scores)
        for t in m["tiers"]:
            assert 0.0 < t["vol_var_scale_by_regime"][regime] < 50.0
    assert "routes chosen on the validation rows" in (out / "report.txt").read_text()


def test_pooled_family_serves_each_training_symbol_its_own_variance_scale(tmp_path: Path) -> None:
    """A pooled family stores each training symbol's validation variance scale; the engine serves that
    symbol the graph's vol x sqrt(own / pooled) (times the regime's factor) and any other symbol the graph's
    vol times the regime's factor alone."""
    import msgspec

    from bot.config import engine_params
    from bot.core.engine import Engine
    from bot.core.paper import PaperTrader
    from bot.models.family import TierFamily
    from bot.sim.synthetic import SyntheticMarket
    from offline.fetch import write_klines_csv

    cfg = parse_config(TINY)
    csvs = []
    for k, sym in enumerate(("AAAUSDT", "BBBUSDT")):
        path = tmp_path / f"{sym}_5m.csv"
        write_klines_csv([s.bar for s in SyntheticMarket(seed=11 + k, symbol=sym).generate(2500)], path)
        csvs.append(path)
    out = tmp_path / "models"
    pipeline_distill(cfg, data=csvs, symbol=["AAAUSDT", "BBBUSDT"], out_dir=out, seed=1)
    family = TierFamily.load(out)
    for t in family.manifest.tiers:
        assert set(t.vol_var_scale_by_symbol) == {"AAAUSDT", "BBBUSDT"}
        assert t.vol_var_scale is not None
        own = t.vol_var_scale_by_symbol["AAAUSDT"]
        regime = np.sqrt(t.vol_var_scale_by_regime["normal"])
        want = np.sqrt(own / t.vol_var_scale) * regime
        assert family.vol_factor(t.name, "AAAUSDT", "normal") == pytest.approx(want)
        assert family.vol_factor(t.name, "NEWUSDT", "normal") == pytest.approx(regime)
    run = msgspec.structs.replace(
        cfg,
        market=msgspec.structs.replace(cfg.market, symbols=["AAAUSDT"]),
        models=msgspec.structs.replace(cfg.models, symbols="any"),
    )
    engine = Engine(engine_params(run), family, PaperTrader(run.paper))
    for step in SyntheticMarket(seed=99, symbol="AAAUSDT").generate(300):
        rec = engine.on_bar(step.bar)
        if rec is not None:
            x = engine.features("AAAUSDT")
            assert x is not None
            raw = family.predict_vol(rec.tier, x)
            assert raw is not None
            factor = family.vol_factor(rec.tier, "AAAUSDT", rec.regime)
            assert rec.vol_forecast == pytest.approx(raw * factor, rel=1e-12)
