"""One tier at run time: its verified manifest entry (`TierSpec`), its ONNX session and how it serves rows.

Sessions are tuned for one row every few minutes (2 cores; benchmarks/latency.py): one intra-op and one
inter-op thread with spinning off (ORT's default spinning threads burn CPU while idle: docs/performance.md),
sequential execution, all graph optimisations. `predict` copies the tier's feature subset (a pre-computed
index array) into a pre-allocated float32 [1, n] buffer that is pre-bound, like the [1, 1] output, through an
IOBinding, so a call allocates nothing in ORT. With a volatility head (`manifest.heads["vol"]`) the vol
output is bound too: one ORT run per bar fills both, and `predict_vol` reads the vol of that run (it runs
the session again only if asked about a different feature vector). `warm(tier)` runs two untimed calls: a
cold session (minutes since its last run) is many times slower than a hot one, so the engine warms the
routed tier just before the confirmed bar.

A small tier may instead be served by a compiled forward pass (`bot.models.forward`, `bot.core.kernels.mlp`)
built from its own ONNX file's weights and proven equal to onnxruntime at load (within
`bot.models.forward.PARITY_ATOL`
on its verification rows); otherwise, or with `[models] compiled_forward = false`, onnxruntime serves it.
`Tier.runtime` says which, `Tier.runtime_reason` why. Both runtimes are behind the same `predict`,
`predict_vol` and `predict_batch`, so the engine, the backtest and shadow scoring cannot tell them apart.

The family that loads and verifies the tiers is `bot.models.family.TierFamily`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from bot.core.errors import ModelError
from bot.core.features import FEATURE_INDEX, FEATURE_VERSION, N_FEATURES
from bot.core.kernels import mlp
from bot.models.forward import ForwardChoice, Runtime
from bot.models.manifest import TierEntry

__all__ = [
    "Tier",
    "TierSpec",
    "feature_columns",
    "session_options",
    "tier_error",
    "tier_session",
    "tier_spec",
]

_ZEROS: Final = np.zeros(N_FEATURES, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class TierSpec:
    """One tier's verified manifest entry (the fields the bot uses; `entry` keeps the whole typed entry)."""

    name: str
    stage: int
    file: str
    sha256: str
    features: tuple[str, ...]
    input_name: str
    output_name: str
    layers: int
    width: int
    params: int
    recipe: str
    entry: TierEntry
    vol_output_name: str | None = None


def session_options() -> ort.SessionOptions:
    """ORT options for single-row, low-rate inference: 1 thread each, no spinning, sequential, all opts."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class Tier:
    """A loaded tier: its session, feature index array and pre-bound float32 buffers, and the compiled
    forward pass when `forward` chose it (`runtime`)."""

    __slots__ = (
        "_binding",
        "_fout",
        "_fresh",
        "_in",
        "_out",
        "_params",
        "_probe",
        "_scratch",
        "_views",
        "_vol",
        "choice",
        "index",
        "session",
        "spec",
    )

    def __init__(
        self, spec: TierSpec, session: ort.InferenceSession, *, forward: ForwardChoice | None = None
    ) -> None:
        self.spec = spec
        self.session = session
        #: which runtime serves this tier and why (onnxruntime when no choice was made)
        self.choice = forward if forward is not None else ForwardChoice("onnxruntime", "not requested")
        self._params: npt.NDArray[np.float64] | None = self.choice.params
        size = 0 if self._params is None else mlp.scratch_size(self._params)
        self._scratch: npt.NDArray[np.float64] = np.zeros(size, dtype=np.float64)
        self._fout: npt.NDArray[np.float64] = np.zeros(2, dtype=np.float64)
        # typed views of params, scratch and out for the compiled pass (no buffer checks per call)
        self._views = (
            None if self._params is None else tuple(map(mlp.view, (self._params, self._scratch, self._fout)))
        )
        self.index: npt.NDArray[np.intp] = feature_columns(spec.features)
        self._in: npt.NDArray[np.float32] = np.zeros((1, len(spec.features)), dtype=np.float32)
        self._out: npt.NDArray[np.float32] = np.zeros((1, 1), dtype=np.float32)
        binding = session.io_binding()
        binding.bind_input(spec.input_name, "cpu", 0, np.float32, list(self._in.shape), self._in.ctypes.data)
        binding.bind_output(
            spec.output_name, "cpu", 0, np.float32, list(self._out.shape), self._out.ctypes.data
        )
        self._vol: npt.NDArray[np.float32] | None = None
        self._probe: npt.NDArray[np.float32] = np.zeros(len(spec.features), dtype=np.float32)
        if spec.vol_output_name is not None:
            self._vol = np.zeros((1, 1), dtype=np.float32)
            binding.bind_output(
                spec.vol_output_name, "cpu", 0, np.float32, list(self._vol.shape), self._vol.ctypes.data
            )
        self._binding = binding
        self._fresh = False  # the bound outputs hold the run on the bound input

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_features(self) -> int:
        return len(self.spec.features)

    @property
    def runtime(self) -> Runtime:
        """ "compiled" (bot.core.kernels.mlp) or "onnxruntime": what `predict` runs."""
        return self.choice.runtime

    @property
    def runtime_reason(self) -> str:
        """Why this runtime: the parity the compiled pass proved, or why onnxruntime kept the tier."""
        return self.choice.reason

    def predict(self, x: npt.NDArray[np.float64]) -> float:
        """Predicted next-horizon return (fraction) for one full feature vector (ordered as FEATURE_NAMES;
        the compiled runtime needs it float64 and contiguous, as the engine's feature rows are)."""
        if self._params is not None:
            return float(mlp.step(self._params, x, self._scratch, self._fout))
        np.take(x, self.index, out=self._in[0])  # float64 -> float32 cast into the bound buffer
        self._fresh = False
        self.session.run_with_iobinding(self._binding)
        self._fresh = True
        return float(self._out[0, 0])

    def predict_pair(self, x: npt.NDArray[np.float64]) -> tuple[float, float | None]:
        """(`predict`, `predict_vol`) of one full feature row from one run of the tier's runtime."""
        views = self._views
        if views is not None:
            ret = float(mlp.step(views[0], x, views[1], views[2]))
            return ret, (float(self._fout[1]) if self._vol is not None else None)
        ret = self.predict(x)
        return ret, (None if self._vol is None else float(self._vol[0, 0]))

    @property
    def has_vol_head(self) -> bool:
        return self._vol is not None

    def predict_vol(self, x: npt.NDArray[np.float64]) -> float | None:
        """Forecast per-bar vol (RMS of one-bar log returns over the vol horizon, a fraction) for one full
        feature vector; None without a vol head. Reads the output of the last `predict` when it ran on the
        same inputs (the engine's call order), else runs the session once."""
        if self._vol is None:
            return None
        if self._params is not None:  # one compiled pass costs about what the ORT path's input check does
            mlp.step(self._params, x, self._scratch, self._fout)
            return float(self._fout[1])
        np.take(x, self.index, out=self._probe)
        if not (self._fresh and np.array_equal(self._probe, self._in[0])):
            self.predict(x)
        return float(self._vol[0, 0])

    def warm(self, calls: int = 2) -> None:
        """`calls` untimed predictions on a zero vector through the same path as `predict` (discarded).

        Warming only the ORT run is not enough: the numpy gather and the Python path go cold too
        (benchmarks/latency.py measures the difference).
        """
        for _ in range(calls):
            self.predict(_ZEROS)

    def predict_batch(
        self, x: npt.NDArray[np.float64], *, output: str | None = None
    ) -> npt.NDArray[np.float64]:
        """Predictions for full feature rows [N, N_FEATURES] (offline checks, batched backtests, tests), from
        the tier's runtime, so each row equals `predict` / `predict_vol` on it exactly.

        Args:
            output: the graph output to read; None = the return head's.
        """
        name = self.spec.output_name if output is None else output
        if self._params is not None:
            heads = [self.spec.output_name, self.spec.vol_output_name]
            if name not in heads:
                raise ValueError(f"tier {self.name!r} has no output {name!r}; outputs: {heads}")
            rows = np.ascontiguousarray(x, dtype=np.float64)
            out = np.zeros((rows.shape[0], 2 if self.has_vol_head else 1), dtype=np.float64)
            mlp.run(self._params, rows, self._scratch, out)
            return np.ascontiguousarray(out[:, heads.index(name)])
        sub = np.ascontiguousarray(x[:, self.index], dtype=np.float32)
        out32 = self.session.run([name], {self.spec.input_name: sub})[0]
        return np.asarray(out32, dtype=np.float64).reshape(-1)

    def predict_rows(
        self, x: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Both heads for full feature rows [N, N_FEATURES] in one call of the tier's runtime (a bar close's
        rows routed here): the predictions and the vol forecasts (None without a vol head), each row equal
        to `predict` / `predict_vol` on it alone."""
        if self._params is not None:
            rows = np.ascontiguousarray(x, dtype=np.float64)
            out = np.zeros((rows.shape[0], 2 if self.has_vol_head else 1), dtype=np.float64)
            mlp.run(self._params, rows, self._scratch, out)
            return out[:, 0].copy(), (out[:, 1].copy() if self.has_vol_head else None)
        sub = np.ascontiguousarray(x[:, self.index], dtype=np.float32)
        spec = self.spec
        if spec.vol_output_name is None:
            (ret,) = self.session.run([spec.output_name], {spec.input_name: sub})
            return np.asarray(ret, dtype=np.float64).reshape(-1), None
        ret, vol = self.session.run([spec.output_name, spec.vol_output_name], {spec.input_name: sub})
        return np.asarray(ret, dtype=np.float64).reshape(-1), np.asarray(vol, dtype=np.float64).reshape(-1)


def feature_columns(features: Iterable[str]) -> npt.NDArray[np.intp]:
    """Each of a tier's features' column in the full feature row."""
    return np.array([FEATURE_INDEX[n] for n in features], dtype=np.intp)


def tier_error(tier: str, what: str) -> ModelError:
    return ModelError(f"tier {tier!r}: {what}")


def tier_spec(entry: TierEntry, i: int, *, vol_output: str | None = None) -> TierSpec:
    """The checks that need the feature schema (the types were checked by decoding)."""
    name, features = entry.name, entry.features
    unknown = [f for f in features if f not in FEATURE_INDEX]
    if unknown:
        raise tier_error(
            name, f"unknown feature(s) {unknown}: not in bot.core.features.FEATURE_NAMES (v{FEATURE_VERSION})"
        )
    if len(set(features)) != len(features):
        raise tier_error(name, f"duplicate feature name(s) in {features}")
    order = [FEATURE_INDEX[f] for f in features]
    if order != sorted(order):
        raise tier_error(name, "features are not in bot.core.features.FEATURE_NAMES order")
    if Path(entry.file).name != entry.file or entry.file in (".", ".."):
        raise tier_error(
            name, f"manifest field 'file': expected a file name inside the models dir, got {entry.file!r}"
        )
    return TierSpec(
        name=name,
        stage=i if entry.stage is None else entry.stage,
        file=entry.file,
        sha256=entry.sha256.lower(),
        features=tuple(features),
        input_name=entry.input_name,
        output_name=entry.output_name,
        layers=entry.layers,
        width=entry.width,
        params=entry.params,
        recipe=entry.recipe,
        entry=entry,
        vol_output_name=vol_output,
    )


def tier_session(spec: TierSpec, data: bytes) -> ort.InferenceSession:
    try:
        sess = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
        raise tier_error(spec.name, f"{spec.file} is not a loadable ONNX model: {exc}") from exc
    inputs = sess.get_inputs()
    outputs = sess.get_outputs()
    if len(inputs) != 1 or inputs[0].name != spec.input_name:
        got = [i.name for i in inputs]
        raise tier_error(spec.name, f"ONNX inputs {got}, manifest input_name {spec.input_name!r}")
    if spec.output_name not in [o.name for o in outputs]:
        got = [o.name for o in outputs]
        raise tier_error(spec.name, f"ONNX outputs {got}, manifest output_name {spec.output_name!r}")
    if spec.vol_output_name is not None and spec.vol_output_name not in [o.name for o in outputs]:
        got = [o.name for o in outputs]
        raise tier_error(
            spec.name, f"ONNX outputs {got}, manifest $.heads.vol.output_name {spec.vol_output_name!r}"
        )
    shape = inputs[0].shape
    width = shape[-1] if shape else None
    if not isinstance(width, int) or width != len(spec.features):
        raise tier_error(
            spec.name, f"input width mismatch: ONNX graph takes {width}, manifest lists {len(spec.features)}"
        )
    if inputs[0].type != "tensor(float)":
        raise tier_error(spec.name, f"ONNX input type {inputs[0].type}, expected tensor(float)")
    return sess
