"""Tiny ONNX tier families for tests, built with onnx.helper and written with a manifest.json that follows
docs/architecture.md exactly.

Each tier is a ReLU MLP with the scaling inside the graph, like the exported tiers:

    y = (relu(...relu(((x - mean) / scale) @ W0 + b0)...) @ Wk + bk) * y_scale + y_mean

`forward(params, x)` is the numpy twin used for parity checks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from bot.core.features import FEATURE_NAMES, FEATURE_SETS, FEATURE_VERSION

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Small default family: name -> (hidden layer widths, feature set), largest first like the real one.
DEFAULT_FAMILY: dict[str, tuple[tuple[int, ...], str]] = {
    "research": ((32, 32, 32), "research"),
    "staging": ((24, 24), "research"),
    "production": ((16, 16), "no_calendar"),
    "edge": ((8,), "seed"),
}


@dataclass
class TierParams:
    """Weights of one fixture tier (float32, as stored in the graph)."""

    name: str
    features: tuple[str, ...]
    mean: F32
    scale: F32
    weights: list[F32] = field(default_factory=list)
    biases: list[F32] = field(default_factory=list)
    y_mean: float = 0.0
    y_scale: float = 1e-3


def make_params(name: str, hidden: tuple[int, ...], features: tuple[str, ...], *, seed: int) -> TierParams:
    """Random but well-scaled weights: outputs are returns of order 1e-3."""
    rng = np.random.default_rng(seed)
    n = len(features)
    p = TierParams(
        name=name,
        features=features,
        mean=rng.normal(0.0, 0.01, n).astype(np.float32),
        scale=rng.uniform(0.5, 2.0, n).astype(np.float32),
        y_mean=float(rng.normal(0.0, 1e-4)),
    )
    sizes = (n, *hidden, 1)
    for a, b in itertools.pairwise(sizes):
        p.weights.append((rng.normal(0.0, 1.0, (a, b)) / np.sqrt(a)).astype(np.float32))
        p.biases.append(rng.normal(0.0, 0.1, b).astype(np.float32))
    return p


def forward(p: TierParams, x: F64) -> F64:
    """Numpy forward pass of the graph in float64 (x: [N, n_features] in the tier's feature order)."""
    h = (x - p.mean.astype(np.float64)) / p.scale.astype(np.float64)
    last = len(p.weights) - 1
    for i, (w, b) in enumerate(zip(p.weights, p.biases, strict=True)):
        h = h @ w.astype(np.float64) + b.astype(np.float64)
        if i < last:
            h = np.maximum(h, 0.0)
    out: F64 = h * p.y_scale + p.y_mean
    return out


def to_onnx(p: TierParams, *, input_name: str = "x", output_name: str = "y") -> bytes:
    """Serialized ONNX model: float32 [N, n_features] -> float32 [N, 1]."""
    n = len(p.features)
    inits = [
        numpy_helper.from_array(p.mean, "mean"),
        numpy_helper.from_array(p.scale, "scale"),
        numpy_helper.from_array(np.array([p.y_scale], dtype=np.float32), "y_scale"),
        numpy_helper.from_array(np.array([p.y_mean], dtype=np.float32), "y_mean"),
    ]
    nodes = [
        helper.make_node("Sub", [input_name, "mean"], ["c"]),
        helper.make_node("Div", ["c", "scale"], ["h0"]),
    ]
    cur = "h0"
    last = len(p.weights) - 1
    for i, (w, b) in enumerate(zip(p.weights, p.biases, strict=True)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        if i < last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i + 1}"]))
            cur = f"h{i + 1}"
        else:
            cur = f"a{i}"
    nodes.append(helper.make_node("Mul", [cur, "y_scale"], ["ys"]))
    nodes.append(helper.make_node("Add", ["ys", "y_mean"], [output_name]))
    graph = helper.make_graph(
        nodes,
        f"tier_{p.name}",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def dummy_calibration() -> dict[str, Any]:
    """A regime calibration shaped like offline.calibrate.calibrate's output (default windows)."""
    return {
        "version": 1,
        "method": "fixture",
        "windows": {"vol": 24, "trend": 24, "volume": 48},
        "n_bars": 0,
        "thresholds": {
            "vol_calm_max": 0.001,
            "vol_volatile_min": 0.002,
            "vol_crisis_min": 0.0045,
            "trend_calm_min": 0.05,
            "spread_crisis_bps": 5.0,
            "imbalance_crisis_min": 0.9,
        },
    }


def write_family(
    models_dir: Path,
    family: dict[str, tuple[tuple[int, ...], str]] | None = None,
    *,
    seed: int = 0,
    calibration: dict[str, Any] | None = None,
) -> dict[str, TierParams]:
    """Write one ONNX file per tier and manifest.json into `models_dir`; return the tiers' params."""
    models_dir.mkdir(parents=True, exist_ok=True)
    fam = DEFAULT_FAMILY if family is None else family
    params: dict[str, TierParams] = {}
    entries: list[dict[str, Any]] = []
    for stage, (name, (hidden, fset)) in enumerate(fam.items()):
        p = make_params(name, hidden, FEATURE_SETS[fset], seed=seed + stage)
        data = to_onnx(p)
        (models_dir / f"{name}.onnx").write_bytes(data)
        params[name] = p
        n_params = sum(w.size + b.size for w, b in zip(p.weights, p.biases, strict=True))
        entries.append(
            {
                "name": name,
                "stage": stage,
                "file": f"{name}.onnx",
                "sha256": hashlib.sha256(data).hexdigest(),
                "layers": len(hidden),
                "width": hidden[0],
                "hidden": list(hidden),
                "params": int(n_params),
                "compression": 1.0,
                "feature_set": fset,
                "features": list(p.features),
                "input_name": "x",
                "output_name": "y",
                "recipe": "teacher" if stage == 0 else "progressive",
                "alpha": 0.8,
                "temperature": 4.0,
                "metrics": {"test_r2": 0.0},
            }
        )
    manifest = {
        "schema_version": 1,
        "created_ms": 1_735_689_600_000,
        "feature_version": FEATURE_VERSION,
        "target": {"horizon_bars": 1, "unit": "return"},
        "tiers": entries,
        "regime_calibration": dummy_calibration() if calibration is None else calibration,
        "provenance": {
            "source": "synthetic",
            "path": "",
            "symbol": "SYNTHUSDT",
            "interval": "5",
            "seed": seed,
        },
        "versions": {"onnx": onnx.__version__},
    }
    (models_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return params


def edit_manifest(models_dir: Path, edit: Any) -> None:
    """Load manifest.json, apply `edit(manifest)` in place, write it back."""
    path = models_dir / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m, indent=2))


def full_vectors(n: int, *, seed: int = 1) -> F64:
    """Random full feature vectors ([n, len(FEATURE_NAMES)]) of a realistic small scale."""
    rng = np.random.default_rng(seed)
    out: F64 = rng.normal(0.0, 0.01, (n, len(FEATURE_NAMES)))
    return out
