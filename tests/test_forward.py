"""The compiled forward pass (bot.models.forward, bot.models.onnxgraph, kernels.mlp): parity, refusals, the
switch."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from fixtures_models import write_family
from onnx import helper, numpy_helper
from support import small_config

from bot.core import kernels
from bot.core.features import FEATURE_INDEX, N_FEATURES
from bot.models import forward
from bot.models.family import TierFamily
from bot.models.manifest import decode_manifest
from bot.models.onnxgraph import read_graph
from bot.models.tier import session_options

COMPILED = kernels.compiled().get("mlp", False)
needs_compiled = pytest.mark.skipif(not COMPILED, reason="bot.core.kernels.mlp is not compiled here")


class _Tier:
    """One tier of a family on disk: its ONNX bytes, an ORT session and its columns."""

    def __init__(self, root: Path, name: str) -> None:
        manifest = decode_manifest((root / "manifest.json").read_bytes(), path=root / "manifest.json")
        entry = next(t for t in manifest.tiers if t.name == name)
        vol = manifest.vol_head
        self.data = (root / entry.file).read_bytes()
        self.index = np.array([FEATURE_INDEX[f] for f in entry.features], dtype=np.intp)
        self.names = [entry.output_name] + ([] if vol is None else [vol.output_name])
        self.vol_name = None if vol is None else vol.output_name

    def session(self, data: bytes | None = None) -> ort.InferenceSession:
        return ort.InferenceSession(
            data or self.data, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )

    def choose(
        self, data: bytes | None = None, *, max_multiply_adds: int | None = None
    ) -> forward.ForwardChoice:
        return forward.choose_forward(
            data or self.data,
            self.session(data),
            self.index,
            input_name="x",
            output_name=self.names[0],
            vol_output_name=self.vol_name,
            require_compiled=False,
            max_multiply_adds=max_multiply_adds,
        )

    def rows(self, n: int, sd: float, *, seed: int = 7) -> npt.NDArray[np.float64]:
        """Full rows: the tier's columns are the scaler's mean plus `sd` training sd of N(0, 1) noise."""
        w = forward.match_mlp(
            read_graph(self.data),
            input_name="x",
            output_name=self.names[0],
            vol_output_name=self.vol_name,
        )
        z = np.random.default_rng(seed).standard_normal((n, len(self.index))) * sd
        x = np.zeros((n, N_FEATURES))
        x[:, self.index] = w.offset + z / w.scale.astype(np.float64)
        return x


@pytest.fixture(scope="module")
def tiers(trained_family: Path) -> dict[str, _Tier]:
    root = trained_family / "current" if (trained_family / "current").exists() else trained_family
    names = [t.name for t in decode_manifest((root / "manifest.json").read_bytes(), path=root).tiers]
    return {n: _Tier(root, n) for n in names}


def test_reader_matches_onnx_package(tiers: dict[str, _Tier]) -> None:
    """The hand-written protobuf reader finds every initializer, node and output the onnx package does."""
    for tier in tiers.values():
        model = onnx.load_from_string(tier.data)
        graph = read_graph(tier.data)
        assert [n.op_type for n in model.graph.node] == [n.op for n in graph.nodes]
        assert [o.name for o in model.graph.output] == graph.outputs
        assert set(graph.initializers) == {i.name for i in model.graph.initializer}
        for init in model.graph.initializer:
            np.testing.assert_array_equal(graph.initializers[init.name], numpy_helper.to_array(init))


def test_parity_every_tier_both_heads(tiers: dict[str, _Tier]) -> None:
    """Every tier proves parity at load; both heads equal onnxruntime within 1e-6 on random rows (3 sd) and
    the return head also 20 sd outside the training range, where the served vol (exp of an extrapolated log
    vol, far above any real vol) agrees to onnxruntime's own float32 precision (1e-5 relative)."""
    for name, tier in tiers.items():
        choice = tier.choose()
        assert choice.runtime == "compiled", (name, choice.reason)
        assert choice.params is not None
        assert choice.max_abs_err is not None
        assert choice.max_abs_err <= forward.PARITY_ATOL
        sess = tier.session()
        assert len(tier.names) == 2  # the test family has the vol head
        near = tier.rows(400, 3.0)
        err = np.abs(
            forward.compiled_outputs(choice.params, near)
            - forward.onnx_outputs(sess, tier.names, near, tier.index)
        )
        assert err.max() <= 1e-6, (name, err.max(axis=0))
        far = tier.rows(400, 20.0, seed=8)
        got = forward.compiled_outputs(choice.params, far)
        want = forward.onnx_outputs(sess, tier.names, far, tier.index)
        assert np.abs(got[:, 0] - want[:, 0]).max() <= 1e-6, name
        np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-5, atol=1e-6)


@needs_compiled
def test_loaded_family_serves_compiled_and_equals_onnxruntime(
    trained_family: Path, tiers: dict[str, _Tier]
) -> None:
    """TierFamily.load serves every test tier compiled; predict/predict_vol per row equal onnxruntime within
    1e-6, and predict_batch equals the per-row path exactly."""
    fam = TierFamily.load(trained_family)
    ref = TierFamily.load(trained_family, compiled_forward=False)
    x = tiers[fam.names[0]].rows(50, 2.0)
    for name in fam.names:
        assert fam[name].runtime == "compiled", fam[name].runtime_reason
        assert ref[name].runtime == "onnxruntime"
        one = np.array([fam.predict(name, r) for r in x])
        vol = np.array([fam.predict_vol(name, r) for r in x], dtype=np.float64)
        np.testing.assert_allclose(one, [ref.predict(name, r) for r in x], rtol=0, atol=1e-6)
        np.testing.assert_allclose(vol, [ref.predict_vol(name, r) for r in x], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(fam[name].predict_batch(x), one)
        np.testing.assert_array_equal(fam[name].predict_batch(x, output="vol"), vol)


@needs_compiled
def test_plain_python_kernel_equals_compiled(tiers: dict[str, _Tier]) -> None:
    """The kernel run as plain Python gives the compiled kernel's outputs bit for bit."""
    pure = kernels.load_pure("mlp")
    tier = tiers["edge"]
    choice = tier.choose()
    assert choice.params is not None
    x = tier.rows(20, 3.0)
    out = np.zeros((20, 2))
    pure.run(choice.params, x, np.zeros(pure.scratch_size(choice.params)), out)
    np.testing.assert_array_equal(out, forward.compiled_outputs(choice.params, x))


def test_changed_weight_fails_parity(tiers: dict[str, _Tier]) -> None:
    """A weight changed after the graph was read makes the proof fail: onnxruntime keeps the tier, and the
    reason names the output and the error."""
    tier = tiers["edge"]
    choice = tier.choose()
    assert choice.params is not None
    params = choice.params.copy()
    params[-5] += 1e-3  # a weight of the output layer
    w = forward.match_mlp(read_graph(tier.data), input_name="x", output_name="y", vol_output_name="vol")
    got = forward.prove(
        params, tier.session(), tier.names, forward.verification_rows(w, tier.index), tier.index
    )
    assert (got.runtime, got.refused, got.params) == ("onnxruntime", True, None)
    assert got.reason.startswith("parity: output ")
    assert "more than 1e-06" in got.reason


def _extra_node(m: onnx.ModelProto) -> None:
    m.graph.node.append(helper.make_node("Identity", ["y"], ["y_copy"], name="extra"))


def _tanh(m: onnx.ModelProto) -> None:
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "Tanh"


def _unused_initializer(m: onnx.ModelProto) -> None:
    m.graph.initializer.append(numpy_helper.from_array(np.ones(3, dtype=np.float32), "spare"))


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (_extra_node, "node(s) after the expected graph: ['Identity']"),
        (_tanh, "(Tanh): expected Relu after a hidden layer"),
        (_unused_initializer, "['spare'] are not part of the expected graph"),
    ],
)
def test_unexpected_graph_falls_back(tiers: dict[str, _Tier], mutate: object, says: str) -> None:
    """A graph that differs from export's structure (an extra node, another activation, a stray
    initializer) keeps onnxruntime with the reason, even though onnxruntime runs it."""
    tier = tiers["edge"]
    model = onnx.load_from_string(tier.data)
    assert callable(mutate)
    mutate(model)
    data = model.SerializeToString()
    got = tier.choose(data)
    assert (got.runtime, got.refused) == ("onnxruntime", True)
    assert got.reason.startswith("unexpected graph structure: ")
    assert says in got.reason


@needs_compiled
def test_family_load_reports_refusal(tmp_path: Path, trained_family: Path) -> None:
    """Through TierFamily.load: a tier whose file holds an extra node is served by onnxruntime and says why;
    the other tiers stay compiled."""
    root = trained_family / "current" if (trained_family / "current").exists() else trained_family
    out = tmp_path / "fam"
    shutil.copytree(root, out)
    model = onnx.load(out / "edge.onnx")
    _extra_node(model)
    onnx.save(model, out / "edge.onnx")
    raw = json.loads((out / "manifest.json").read_text())
    for t in raw["tiers"]:
        if t["name"] == "edge":
            t["sha256"] = hashlib.sha256((out / "edge.onnx").read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(raw))
    fam = TierFamily.load(out)
    assert (fam["edge"].runtime, fam["edge"].choice.refused) == ("onnxruntime", True)
    assert "after the expected graph" in fam["edge"].runtime_reason
    assert all(fam[n].runtime == "compiled" for n in fam.names if n != "edge")


def test_switch_forces_onnxruntime(trained_family: Path) -> None:
    """`[models] compiled_forward = false` (default true) keeps onnxruntime for every tier (not a refusal)."""
    assert small_config().models.compiled_forward is True
    cfg = small_config(models={"compiled_forward": False})
    fam = TierFamily.load(trained_family, compiled_forward=cfg.models.compiled_forward)
    for tier in fam:
        assert (tier.runtime, tier.choice.refused) == ("onnxruntime", False)
        assert tier.runtime_reason == "[models] compiled_forward = false"


def test_hand_built_graph_keeps_onnxruntime(tmp_path: Path) -> None:
    """The hand-built fixture graphs (Sub/Div scaling, not export's Scaler) are refused, not guessed at."""
    write_family(tmp_path)
    for tier in TierFamily.load(tmp_path):
        assert tier.runtime == "onnxruntime"
        if COMPILED:
            assert tier.choice.refused
            assert "expected Scaler" in tier.runtime_reason


def test_size_limit_keeps_onnxruntime(tiers: dict[str, _Tier]) -> None:
    """A tier above the multiply-add limit is left to onnxruntime (faster there), by policy, not refused."""
    got = tiers["edge"].choose(max_multiply_adds=10)
    assert (got.runtime, got.refused) == ("onnxruntime", False)
    assert "multiply-adds per row, above 10" in got.reason
