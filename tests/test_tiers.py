"""Tier runtime: manifest verification (hash, feature schema, files, graph) and onnxruntime parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_models import edit_manifest, forward, full_vectors, write_family

from bot.core.errors import ModelError
from bot.core.features import FEATURE_SETS, N_FEATURES
from bot.models.family import TierFamily
from bot.models.tier import session_options


@pytest.fixture
def family_dir(tmp_path: Path) -> Path:
    """A fresh four-tier fixture family."""
    write_family(tmp_path / "models")
    return tmp_path / "models"


def test_predict_matches_numpy_forward_pass(tmp_path: Path) -> None:
    """Each tier's prediction equals the numpy forward pass on its own feature subset (float32 tolerance)."""
    params = write_family(tmp_path)
    fam = TierFamily.load(tmp_path)
    assert fam.names == ["research", "staging", "production", "edge"]
    X = full_vectors(64)
    for name in fam.names:
        tier = fam[name]
        assert tier.n_features == len(params[name].features)
        ref = forward(params[name], X[:, tier.index])[:, 0]
        one = np.array([fam.predict(name, x) for x in X])
        np.testing.assert_allclose(one, ref, rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(tier.predict_batch(X), ref, rtol=1e-4, atol=1e-8)
    # the subsets really differ: edge sees the seed four, production no calendar
    assert fam["edge"].n_features == 4
    assert fam["production"].n_features == len(FEATURE_SETS["no_calendar"]) < N_FEATURES


def test_warm_does_not_change_predictions(family_dir: Path) -> None:
    """warm() is side-effect free: predictions before and after are identical."""
    fam = TierFamily.load(family_dir)
    x = full_vectors(1)[0]
    before = fam.predict("staging", x)
    fam.warm("staging")
    assert fam.predict("staging", x) == before


def test_tampered_file_is_refused_naming_tier(family_dir: Path) -> None:
    """A model file whose bytes changed fails the sha256 check with a message naming the tier."""
    f = family_dir / "production.onnx"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"tier 'production': sha256 mismatch for production\.onnx"):
        TierFamily.load(family_dir)


def test_wrong_feature_version_is_refused(family_dir: Path) -> None:
    """A manifest from another feature version is refused, naming the tiers and both versions."""
    edit_manifest(family_dir, lambda m: m.update(feature_version="0"))
    with pytest.raises(ModelError, match=r"feature_version '0', bot\.core\.features is '2'") as exc:
        TierFamily.load(family_dir)
    assert "research" in str(exc.value)


def test_missing_file_is_refused(family_dir: Path) -> None:
    """A tier whose ONNX file is gone is refused, naming the tier and the path."""
    (family_dir / "edge.onnx").unlink()
    with pytest.raises(ModelError, match=r"tier 'edge': model file .*edge\.onnx is missing"):
        TierFamily.load(family_dir)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    """No manifest.json says how to build one."""
    with pytest.raises(ModelError, match="no manifest; build a tier family"):
        TierFamily.load(tmp_path)


def _set_tier(name: str, **fields: Any) -> Any:
    def edit(m: dict[str, Any]) -> None:
        next(t for t in m["tiers"] if t["name"] == name).update(fields)

    return edit


def test_unknown_feature_is_refused(family_dir: Path) -> None:
    """A feature name bot.core.features does not know is refused, naming the tier and the feature."""
    edit_manifest(family_dir, _set_tier("edge", features=["ret_1", "range_vol", "vol_chg", "mom_7"]))
    with pytest.raises(ModelError, match=r"tier 'edge': unknown feature\(s\) \['mom_7'\]"):
        TierFamily.load(family_dir)


def test_feature_order_is_checked(family_dir: Path) -> None:
    """Features listed out of FEATURE_NAMES order are refused."""
    edit_manifest(family_dir, _set_tier("edge", features=["range_vol", "ret_1", "vol_chg", "mom_5"]))
    with pytest.raises(ModelError, match=r"tier 'edge': features are not in .*FEATURE_NAMES order"):
        TierFamily.load(family_dir)


def test_input_width_mismatch_is_refused(family_dir: Path) -> None:
    """A manifest listing more features than the graph takes is refused with both widths."""
    edit_manifest(family_dir, _set_tier("edge", features=["ret_1", "range_vol", "vol_chg", "mom_5", "ret_3"]))
    with pytest.raises(
        ModelError, match="tier 'edge': input width mismatch: ONNX graph takes 4, manifest lists 5"
    ):
        TierFamily.load(family_dir)


def test_input_name_mismatch_is_refused(family_dir: Path) -> None:
    """A manifest input_name the graph does not have is refused."""
    edit_manifest(family_dir, _set_tier("staging", input_name="features"))
    with pytest.raises(
        ModelError, match=r"tier 'staging': ONNX inputs \['x'\], manifest input_name 'features'"
    ):
        TierFamily.load(family_dir)


def test_only_and_routes(family_dir: Path) -> None:
    """`only` loads a subset; routes to unloaded tiers and unknown tier names raise ModelError."""
    fam = TierFamily.load(family_dir, only=["edge", "research"])
    assert set(fam.names) == {"edge", "research"}
    with pytest.raises(ModelError, match="name tier"):
        fam.check_routes({"calm_trend": "edge", "normal": "production"})
    with pytest.raises(ModelError, match="tier 'production' is not loaded"):
        fam.predict("production", full_vectors(1)[0])
    with pytest.raises(ModelError, match=r"tier\(s\) \['nano'\] not in the manifest"):
        TierFamily.load(family_dir, only=["nano"])
    assert fam.regime_calibration["thresholds"]["vol_calm_max"] == 0.001


def test_predict_checks_vector_shape(family_dir: Path) -> None:
    """predict() wants the full FEATURE_NAMES vector, not a tier subset."""
    fam = TierFamily.load(family_dir)
    with pytest.raises(ValueError, match=rf"expected a feature vector of shape \({N_FEATURES},\)"):
        fam.predict("edge", np.zeros(4))


def test_session_options_are_single_threaded_without_spinning() -> None:
    """Sessions use one intra/inter-op thread, sequential execution and no spinning."""
    so = session_options()
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 1)
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"


class _CountingSession:
    """Delegates to an ORT session and counts bound runs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.runs = 0

    def run_with_iobinding(self, binding: Any) -> None:
        self.runs += 1
        self.inner.run_with_iobinding(binding)

    def run(self, *args: Any) -> Any:
        return self.inner.run(*args)


def test_vol_head_forecast_comes_from_the_same_run_as_predict(trained_family: Path) -> None:
    """A trained family has a vol head; predict_vol equals the graph's `vol` output (positive, a per-bar
    fraction) and, after predict on the same vector, costs no second ORT run (the onnxruntime path; the
    compiled one is tests/test_forward.py's)."""
    fam = TierFamily.load(trained_family, compiled_forward=False)
    assert fam.has_vol_head
    assert fam.manifest.vol_head is not None
    assert fam.manifest.vol_head.horizon_bars == 12
    rows = full_vectors(5, seed=3)
    for tier in fam:
        counter = _CountingSession(tier.session)
        tier.session = counter  # type: ignore[assignment]  # the counting proxy stands in for the session
        want = tier.predict_batch(rows, output="vol")
        for x, w in zip(rows, want, strict=True):
            fam.predict(tier.name, x)
            before = counter.runs
            v = fam.predict_vol(tier.name, x)
            assert counter.runs == before
            assert v == pytest.approx(float(w), rel=1e-6)
            assert v is not None
            assert 0.0 < v < 1.0
        fam.warm(tier.name)  # another input is bound now: predict_vol runs the session for its own x
        before = counter.runs
        assert fam.predict_vol(tier.name, rows[0]) == pytest.approx(float(want[0]), rel=1e-6)
        assert counter.runs == before + 1


def test_check_fit_refuses_another_vol_horizon(trained_family: Path) -> None:
    """A config with another [distill] vol_horizon_bars than the manifest's vol head: refused, naming both."""
    from support import small_config

    fam = TierFamily.load(trained_family)
    fam.check_fit(small_config(market={"symbols": ["SYNTHUSDT"]}))
    with pytest.raises(
        ModelError, match=r"over 12 bars \(\$\.heads\.vol\.horizon_bars\).*vol_horizon_bars is 24"
    ):
        fam.check_fit(small_config(market={"symbols": ["SYNTHUSDT"]}, distill={"vol_horizon_bars": 24}))


def test_check_fit_accepts_every_pooled_symbol(trained_family: Path, tmp_path: Path) -> None:
    """A family pooled over several symbols ($.provenance.symbols) fits any of them and refuses another,
    naming the list."""
    import shutil

    from support import small_config

    fam_dir = tmp_path / "pooled"
    shutil.copytree(trained_family, fam_dir)
    edit_manifest(fam_dir, lambda m: m["provenance"].update(symbol=None, symbols=["SYNTHUSDT", "ETHUSDT"]))
    fam = TierFamily.load(fam_dir)
    fam.check_fit(small_config(market={"symbols": ["ETHUSDT", "SYNTHUSDT"]}))
    with pytest.raises(ModelError, match=r"symbols \['SYNTHUSDT', 'ETHUSDT'\] \(\$\.provenance\.symbols\)"):
        fam.check_fit(small_config(market={"symbols": ["SOLUSDT"]}))
