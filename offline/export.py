"""Export of the tier family: one ONNX file per tier (scaling inside the graph) and `manifest.json`.

Each graph takes raw features `x` float32 [N, n_features] in the tier's feature order, standardises them
(a Scaler node), runs the MLP, and maps the standardised prediction back to a raw forward return
(Mul + Add nodes): output `y` float32 [N, 1]. With a volatility head the MLP has a second output, the
standardised log realised vol; the same Mul + Add unscale it and an Exp node turns it into the natural
unit: output `vol` float32 [N, 1], the forecast per-bar RMS of one-bar log returns (a fraction). An export
proves itself: it fails with ModelError unless onnxruntime reproduces the in-memory scikit-learn model
within `onnx_atol` on held-out rows, for every output.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.pipeline import Pipeline

from bot.config import Config
from bot.core.drift import N_BINS, fit_bins, monitored_features, training_psi_max
from bot.core.errors import ModelError
from bot.core.features import FEATURE_INDEX, FEATURE_VERSION
from bot.models.manifest import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA_VERSION,
    VOL_UNIT,
    DriftReference,
    FeatureBins,
    Head,
    Manifest,
    ReturnSkill,
    Target,
    TierEntry,
    TierMetrics,
    decode_manifest,
    encode_manifest,
)
from offline.data import Dataset, check_name
from offline.distill import DistillResult
from offline.evaluate import rank_products, return_skill
from offline.routes import choose_routes
from offline.run import Candidate
from offline.train import TierModel

F64 = npt.NDArray[np.float64]

SCHEMA_VERSION = MANIFEST_SCHEMA_VERSION
INPUT_NAME = "x"
OUTPUT_NAME = "y"
VOL_OUTPUT_NAME = "vol"
TARGET_OPSET = 17


def tier_to_onnx(model: TierModel, *, name: str) -> onnx.ModelProto:
    """ONNX graph `x` raw features float32 [N, n] -> `y` raw return float32 [N, 1] (and, with a vol head,
    `vol` float32 [N, 1]: exp of the unscaled log-vol output times `sqrt(model.vol_var_scale)`, the
    per-bar RMS log return as served)."""
    n = len(model.features)
    pipe = Pipeline([("scaler", model.x_scaler), ("mlp", model.mlp)])
    onx = to_onnx(
        pipe,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n]))],
        target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
    )
    graph = onx.graph
    if len(graph.output) != 1:
        raise ModelError(f"{name}: expected one graph output from skl2onnx, got {len(graph.output)}")
    std_out = graph.output[0].name
    scales, means = [model.y_scale], [model.y_mean]
    if model.vol_scale is not None and model.vol_mean is not None:
        scales.append(model.vol_scale)
        means.append(model.vol_mean)
    k = len(scales)
    graph.initializer.extend(
        [
            helper.make_tensor("y_scale", TensorProto.FLOAT, [k], scales),
            helper.make_tensor("y_mean", TensorProto.FLOAT, [k], means),
        ]
    )
    raw = OUTPUT_NAME if k == 1 else "targets_raw"
    if k > 1:
        # skl2onnx reshapes an MLPRegressor's output to [-1, 1] whatever its width (row-major, so the
        # heads interleave); restore [N, k] before unscaling
        graph.initializer.append(helper.make_tensor("heads_shape", TensorProto.INT64, [2], [-1, k]))
        graph.node.append(helper.make_node("Reshape", [std_out, "heads_shape"], ["heads_std"], name="heads"))
        std_out = "heads_std"
    graph.node.extend(
        [
            helper.make_node("Mul", [std_out, "y_scale"], ["y_scaled"], name="target_scale"),
            helper.make_node("Add", ["y_scaled", "y_mean"], [raw], name="target_shift"),
        ]
    )
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 1])]
    if k == 2:
        graph.initializer.extend(
            [
                helper.make_tensor("head_return", TensorProto.INT64, [1], [0]),
                helper.make_tensor("head_vol", TensorProto.INT64, [1], [1]),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("Gather", [raw, "head_return"], [OUTPUT_NAME], name="return_head", axis=1),
                helper.make_node("Gather", [raw, "head_vol"], ["log_vol"], name="vol_head", axis=1),
                helper.make_node("Exp", ["log_vol"], ["vol_uncalibrated"], name="vol_natural_units"),
                helper.make_node(
                    "Mul", ["vol_uncalibrated", "vol_calibration"], [VOL_OUTPUT_NAME], name="vol_calibration"
                ),
            ]
        )
        # sqrt of the variance scale fitted on validation rows: the served vol is unbiased in variance
        graph.initializer.append(
            helper.make_tensor("vol_calibration", TensorProto.FLOAT, [1], [math.sqrt(model.vol_var_scale)])
        )
        outputs.append(helper.make_tensor_value_info(VOL_OUTPUT_NAME, TensorProto.FLOAT, [None, 1]))
    del graph.output[:]
    graph.output.extend(outputs)
    graph.name = f"progdistill_{name}"
    meta = {
        "tier": name,
        "features": json.dumps(list(model.features)),
        "feature_version": FEATURE_VERSION,
        "target": "raw forward return (fraction)",
    }
    if k == 2:
        meta["vol"] = "forecast per-bar RMS of one-bar log returns (fraction)"
    onnx.helper.set_model_props(onx, meta)
    onnx.checker.check_model(onx)
    model_proto: onnx.ModelProto = onx
    return model_proto


def onnx_predict(
    path_or_bytes: str | Path | bytes, X: npt.NDArray[np.float32], *, output: str = OUTPUT_NAME
) -> F64:
    """Run an exported tier in onnxruntime; returns `output` (default: the raw returns) as float64 [N]."""
    src = path_or_bytes if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    out = sess.run([output], {INPUT_NAME: X})[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def check_parity(model: TierModel, blob: bytes, X_full: F64, *, atol: float, name: str) -> float:
    """Max |onnxruntime - scikit-learn| on `X_full` rows over every output (the raw return and, with a vol
    head, the served vol, `TierModel.predict_vol`); raises ModelError above `atol`."""
    X32 = X_full.astype(np.float32)  # both sides see the same float32 feature values the bot will send
    x_in = np.ascontiguousarray(X32[:, model.columns])
    checks = [(OUTPUT_NAME, model.predict(X32.astype(np.float64)))]
    if model.has_vol_head:
        checks.append((VOL_OUTPUT_NAME, model.predict_vol(X32.astype(np.float64))))
    worst = 0.0
    for output, want in checks:
        got = onnx_predict(blob, x_in, output=output)
        if got.shape != want.shape:
            raise ModelError(f"{name}: ONNX output {output!r} shape {got.shape}, expected {want.shape}")
        err = float(np.max(np.abs(got - want)))
        if not err <= atol:
            raise ModelError(
                f"{name}: ONNX and scikit-learn disagree on output {output!r} by {err:.3g} on {len(X32)} "
                f"held-out rows; expected <= onnx_atol={atol:g}"
            )
        worst = max(worst, err)
    return worst


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that produced the models."""
    out = {"python": platform.python_version()}
    for dist in ("numpy", "scikit-learn", "onnxruntime", "skl2onnx", "onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def regime_calibration(ds: Dataset, cfg: Config) -> dict[str, Any]:
    """`offline.calibrate.calibrate` on each symbol's training bars (thresholds per symbol and pooled)."""
    from offline.calibrate import calibrate

    return dict(calibrate(ds.train_bars_by_symbol(), cfg.regime))


def drift_reference(
    ds: Dataset, used: list[str], *, window_bars: int, n_bins: int = N_BINS
) -> DriftReference | None:
    """The manifest's `drift` block: quantile bins of each monitored feature over the training rows, and
    the highest PSI a rolling `window_bars` window of those rows reaches (each feature's baseline); None
    when the tiers use no monitored feature."""
    X = ds.X[ds.splits.train]
    bins = {name: fit_bins(X[:, FEATURE_INDEX[name]], n_bins) for name in monitored_features(used)}
    if not bins:
        return None
    top = training_psi_max(bins, FEATURE_INDEX, X, window_bars=window_bars) or {}
    features = {
        name: FeatureBins(edges=e, train_frac=f, train_psi_max=top.get(name)) for name, (e, f) in bins.items()
    }
    return DriftReference(
        method="quantile",
        bins=n_bins,
        rows=int(X.shape[0]),
        window_bars=window_bars if top else None,
        features=features,
    )


def held_out_return_skill(result: DistillResult, ds: Dataset) -> ReturnSkill:
    """The teacher's return-head IC and its standard error on the run's test rows
    (`offline.evaluate.return_skill`: a Newey-West SE over bar times, lags for the horizon's overlap)."""
    teacher = result.tier_names[0]
    te = ds.splits.test
    products = rank_products(result.chosen[teacher].model.predict(ds.X[te]), ds.y[te])
    ic, se, n = return_skill(products, ds.start_ms[te], horizon_bars=ds.horizon_bars)
    return ReturnSkill(ic=ic, se=se, n_rows=n, rows="test", tier=teacher)


def _manifest_metrics(c: Candidate) -> TierMetrics:
    fields = msgspec.structs.fields(TierMetrics)
    return TierMetrics(**{f.name: _opt_float(c.metrics.get(f.name)) for f in fields})


def _by_symbol(by_series: dict[int, float], ds: Dataset) -> dict[str, float]:
    """`{series index: value}` keyed by each pooled series' symbol (series without a symbol are left out)."""
    series = ds.provenance.get("series") or []
    out: dict[str, float] = {}
    for k, value in by_series.items():
        symbol = series[k].get("symbol") if k < len(series) else None
        if symbol:
            out[str(symbol)] = float(value)
    return out


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _tier_entry(result: DistillResult, name: str, path: Path, ds: Dataset, cfg: Config) -> TierEntry:
    """The manifest entry of tier `name`, its graph written at `path` (regime scales are added later)."""
    cand = result.chosen[name]
    tier_cfg = cfg.tiers[name]
    return TierEntry(
        name=name,
        stage=result.tier_names.index(name),
        file=path.name,
        sha256=sha256_file(path),
        layers=tier_cfg.layers,
        width=tier_cfg.width,
        hidden=[int(h) for h in cand.model.hidden],
        params=int(cand.model.params),
        compression=_opt_float(cand.metrics["compression"]),
        feature_set=tier_cfg.features,
        features=list(cand.model.features),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        recipe=cand.recipe,
        alpha=_opt_float(cand.alpha),
        temperature=_opt_float(cand.temperature),
        metrics=_manifest_metrics(cand),
        vol_var_scale=cand.model.vol_var_scale if cand.model.has_vol_head else None,
        vol_var_scale_by_symbol=_by_symbol(cand.model.vol_var_scale_by_series, ds),
    )


def export_family(
    result: DistillResult,
    ds: Dataset,
    cfg: Config,
    out_dir: Path,
    *,
    created_ms: int | None = None,
) -> dict[str, Any]:
    """Write `<tier>.onnx` for every chosen tier and `manifest.json` into `out_dir` (must exist).

    Every graph is checked against scikit-learn on the test rows before anything is written.

    Returns:
        The manifest (also written), with `parity_max_abs_err` per tier in `result.info`.
    """
    X_check = ds.X[ds.splits.test]
    blobs: dict[str, bytes] = {}
    parity: dict[str, float] = {}
    for name in result.tier_names:
        if not check_name(name):
            raise ModelError(f"tier name {name!r} is not a safe file name (letters, digits, _ and -)")
        cand = result.chosen[name]
        blob = tier_to_onnx(cand.model, name=name).SerializeToString()
        parity[name] = check_parity(cand.model, blob, X_check, atol=cfg.distill.onnx_atol, name=name)
        blobs[name] = blob
    result.info["parity_max_abs_err"] = parity
    has_vol = all(result.chosen[n].model.has_vol_head for n in result.tier_names)
    heads = {"return": Head(horizon_bars=ds.horizon_bars, unit="return", output_name=OUTPUT_NAME)}
    if has_vol and ds.vol_horizon_bars is not None:
        heads["vol"] = Head(horizon_bars=ds.vol_horizon_bars, unit=VOL_UNIT, output_name=VOL_OUTPUT_NAME)
    tiers_out: list[TierEntry] = []
    for name in result.tier_names:
        path = out_dir / f"{name}.onnx"
        path.write_bytes(blobs[name])
        tiers_out.append(_tier_entry(result, name, path, ds, cfg))
    calibration = regime_calibration(ds, cfg)
    routing = choose_routes(result, ds, calibration, cfg.regime, cfg.distill)
    for entry in tiers_out:
        entry.vol_var_scale_by_regime = routing.var_scale_by_regime.get(entry.name, {})
    manifest = Manifest(
        schema_version=MANIFEST_SCHEMA_VERSION,
        created_ms=created_ms if created_ms is not None else time.time_ns() // 1_000_000,
        feature_version=FEATURE_VERSION,
        target=Target(horizon_bars=ds.horizon_bars, unit="return"),
        heads=heads,
        tiers=tiers_out,
        regime_calibration=calibration,
        routes=routing.choice,
        provenance=dict(ds.provenance),
        versions=library_versions(),
        drift=drift_reference(
            ds, [f for t in tiers_out for f in t.features], window_bars=cfg.service.drift_window_bars
        ),
        return_skill=held_out_return_skill(result, ds),
    )
    data = encode_manifest(manifest)
    decode_manifest(data, path=out_dir / MANIFEST_NAME)  # what the bot will read: it must validate
    (out_dir / MANIFEST_NAME).write_bytes(data)
    built: dict[str, Any] = msgspec.to_builtins(manifest)
    return built


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """Write JSON (strict: NaN/inf are rejected) with a trailing newline."""
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")
