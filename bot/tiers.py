"""The tier family at run time: `manifest.json` checked against the feature schema, one ONNX session per tier.

`TierFamily.load(models_dir)` refuses (ModelError naming the tier and the difference) a manifest whose
schema or feature version differs from `bot.core.features`, a tier whose file is missing or whose bytes do
not hash to the manifest's sha256, an unknown feature name, and an ONNX graph whose input/output names or
input width differ from the manifest. The verified bytes are the bytes the session is built from.

Sessions are tuned for one row every few minutes (2 cores; benchmarks/latency.py): one intra-op and one
inter-op thread with spinning off (ORT's default spinning threads burn CPU while idle: docs/performance.md),
sequential execution, all graph optimisations. `predict` copies the tier's feature subset (a pre-computed
index array) into a pre-allocated float32 [1, n] buffer that is pre-bound, like the [1, 1] output, through an
IOBinding, so a call allocates nothing in ORT. With a volatility head (`manifest.heads["vol"]`) the vol
output is bound too: one ORT run per bar fills both, and `predict_vol` reads the vol of that run (it runs
the session again only if asked about a different feature vector). `warm(tier)` runs two untimed calls: a
cold session (minutes since its last run) is many times slower than a hot one, so the engine warms the
routed tier just before the confirmed bar.

A small tier may instead be served by a compiled forward pass (`bot.forward`, `bot.core.kernels.mlp`) built
from its own ONNX file's weights and proven equal to onnxruntime at load (within `bot.forward.PARITY_ATOL`
on its verification rows); otherwise, or with `[models] compiled_forward = false`, onnxruntime serves it.
`Tier.runtime` says which, `Tier.runtime_reason` why. Both runtimes are behind the same `predict`,
`predict_vol` and `predict_batch`, so the engine, the backtest and shadow scoring cannot tell them apart.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from bot import modelstore
from bot.core.errors import ModelError
from bot.core.features import FEATURE_INDEX, FEATURE_SETS, FEATURE_VERSION, N_FEATURES
from bot.core.kernels import mlp
from bot.core.regime import resolve_routes
from bot.forward import ForwardChoice, Runtime, choose_forward
from bot.manifest import MANIFEST_NAME, MANIFEST_SCHEMA_VERSION, Manifest, TierEntry, decode_manifest

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["MANIFEST_NAME", "MANIFEST_SCHEMA_VERSION", "Tier", "TierFamily", "TierSpec", "session_options"]

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
        self.index: npt.NDArray[np.intp] = _columns(spec.features)
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


def _columns(features: Iterable[str]) -> npt.NDArray[np.intp]:
    """Each of a tier's features' column in the full feature row."""
    return np.array([FEATURE_INDEX[n] for n in features], dtype=np.intp)


def _fail(tier: str, what: str) -> ModelError:
    return ModelError(f"tier {tier!r}: {what}")


def _spec(entry: TierEntry, i: int, *, vol_output: str | None = None) -> TierSpec:
    """The checks that need the feature schema (the types were checked by decoding)."""
    name, features = entry.name, entry.features
    unknown = [f for f in features if f not in FEATURE_INDEX]
    if unknown:
        raise _fail(
            name, f"unknown feature(s) {unknown}: not in bot.core.features.FEATURE_NAMES (v{FEATURE_VERSION})"
        )
    if len(set(features)) != len(features):
        raise _fail(name, f"duplicate feature name(s) in {features}")
    order = [FEATURE_INDEX[f] for f in features]
    if order != sorted(order):
        raise _fail(name, "features are not in bot.core.features.FEATURE_NAMES order")
    if Path(entry.file).name != entry.file or entry.file in (".", ".."):
        raise _fail(
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


def _session(spec: TierSpec, data: bytes) -> ort.InferenceSession:
    try:
        sess = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
        raise _fail(spec.name, f"{spec.file} is not a loadable ONNX model: {exc}") from exc
    inputs = sess.get_inputs()
    outputs = sess.get_outputs()
    if len(inputs) != 1 or inputs[0].name != spec.input_name:
        got = [i.name for i in inputs]
        raise _fail(spec.name, f"ONNX inputs {got}, manifest input_name {spec.input_name!r}")
    if spec.output_name not in [o.name for o in outputs]:
        got = [o.name for o in outputs]
        raise _fail(spec.name, f"ONNX outputs {got}, manifest output_name {spec.output_name!r}")
    if spec.vol_output_name is not None and spec.vol_output_name not in [o.name for o in outputs]:
        got = [o.name for o in outputs]
        raise _fail(
            spec.name, f"ONNX outputs {got}, manifest $.heads.vol.output_name {spec.vol_output_name!r}"
        )
    shape = inputs[0].shape
    width = shape[-1] if shape else None
    if not isinstance(width, int) or width != len(spec.features):
        raise _fail(
            spec.name, f"input width mismatch: ONNX graph takes {width}, manifest lists {len(spec.features)}"
        )
    if inputs[0].type != "tensor(float)":
        raise _fail(spec.name, f"ONNX input type {inputs[0].type}, expected tensor(float)")
    return sess


class TierFamily:
    """The loaded, verified tier family. Use `TierFamily.load(models_dir)`."""

    def __init__(
        self, manifest: Manifest, tiers: Mapping[str, Tier], models_dir: Path, *, model_sha: str = ""
    ) -> None:
        self.manifest = manifest
        self.tiers: dict[str, Tier] = dict(tiers)
        self.models_dir = models_dir
        #: hex sha256 of the manifest.json bytes: which family decided a bar (every DecisionRecord has it)
        self.model_sha = model_sha
        self._vol_factors = {
            (t.name, symbol): math.sqrt(own / t.vol_var_scale)
            for t in manifest.tiers
            if t.vol_var_scale
            for symbol, own in t.vol_var_scale_by_symbol.items()
        }
        self._regime_factors = {
            (t.name, regime): math.sqrt(scale)
            for t in manifest.tiers
            for regime, scale in t.vol_var_scale_by_regime.items()
        }

    @classmethod
    def load(
        cls, models_dir: str | Path, *, only: Iterable[str] | None = None, compiled_forward: bool = True
    ) -> TierFamily:
        """Read and verify the family's manifest.json and build one session per tier.

        Args:
            models_dir: a versioned models directory (its `current` version is loaded, see bot.modelstore)
                or a plain directory with manifest.json and the ONNX files it names.
            only: load just these tiers (each must be in the manifest); None loads all.
            compiled_forward: serve each small tier by the compiled forward pass where it proves equal to
                onnxruntime (`bot.forward.choose_forward`; `Tier.runtime`); False keeps onnxruntime for all.

        Raises:
            ModelError: the manifest is missing or malformed, or a tier fails a check; the message names the
                tier and the difference.
        """
        root = modelstore.resolve(models_dir)
        path = root / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ModelError(
                f"{path}: no manifest; build a tier family with `python -m offline distill`"
            ) from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read manifest: {exc.strerror}") from exc
        manifest = decode_manifest(raw, path=path)
        fv = manifest.feature_version
        vol = manifest.vol_head
        vol_output = None if vol is None else vol.output_name
        specs = [_spec(e, i, vol_output=vol_output) for i, e in enumerate(manifest.tiers)]
        if fv != FEATURE_VERSION:
            names = [s.name for s in specs]
            raise ModelError(
                f"{path}: tiers {names} were trained on feature_version {fv!r}, bot.core.features is "
                f"{FEATURE_VERSION!r}; retrain (python -m offline distill) or run the matching bot"
            )
        seen: set[str] = set()
        for s in specs:
            if s.name in seen:
                raise _fail(s.name, "appears twice in the manifest")
            seen.add(s.name)
        wanted = None if only is None else list(only)
        if wanted is not None:
            missing = [n for n in wanted if n not in seen]
            if missing:
                raise ModelError(
                    f"{path}: tier(s) {missing} not in the manifest, which has {[s.name for s in specs]}"
                )
            specs = [s for s in specs if s.name in wanted]
        tiers: dict[str, Tier] = {}
        for s in specs:
            file = root / s.file
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                raise _fail(s.name, f"model file {file} is missing") from None
            except OSError as exc:
                raise _fail(s.name, f"cannot read {file}: {exc.strerror}") from exc
            digest = hashlib.sha256(data).hexdigest()
            if digest != s.sha256:
                raise _fail(s.name, f"sha256 mismatch for {s.file}: manifest {s.sha256}, file {digest}")
            session = _session(s, data)
            choice = choose_forward(
                data,
                session,
                _columns(s.features),
                input_name=s.input_name,
                output_name=s.output_name,
                vol_output_name=s.vol_output_name,
                enabled=compiled_forward,
            )
            tiers[s.name] = Tier(s, session, forward=choice)
        return cls(manifest, tiers, root, model_sha=hashlib.sha256(raw).hexdigest())

    @property
    def names(self) -> list[str]:
        """Tier names in manifest order (largest first)."""
        return list(self.tiers)

    @property
    def regime_calibration(self) -> dict[str, Any]:
        """The manifest's `regime_calibration` ({} when absent)."""
        return dict(self.manifest.regime_calibration)

    def __contains__(self, name: object) -> bool:
        return name in self.tiers

    def __iter__(self) -> Iterator[Tier]:
        return iter(self.tiers.values())

    def __getitem__(self, name: str) -> Tier:
        try:
            return self.tiers[name]
        except KeyError:
            raise ModelError(f"tier {name!r} is not loaded; loaded tiers: {self.names}") from None

    def check_fit(self, cfg: Config) -> None:
        """Raise ModelError unless the family fits `cfg`: the interval and (unless `[models] symbols = "any"`)
        the symbols it was trained on (`provenance`), each configured tier's feature set, the horizon and the
        routes. The message names the manifest, both values and the fix."""
        path = self.models_dir / MANIFEST_NAME
        prov = self.manifest.provenance
        trained = prov.get("interval")
        if trained != cfg.market.interval:
            raise ModelError(
                f"{path}: trained on interval {trained!r} bars ($.provenance.interval), config [market] "
                f"interval is {cfg.market.interval!r}; set interval = {trained!r} or retrain on "
                f"{cfg.market.interval!r} bars"
            )
        symbol = prov.get("symbol")
        pooled = prov.get("symbols")  # a family trained on several symbols at once (offline distill pooled)
        trained_on = set(pooled) if isinstance(pooled, list) else {symbol}
        # a selection ([market] symbols = {all = true, ...}) is refused by the config unless symbols = "any"
        listed = [] if cfg.market.selection is not None else cfg.market.symbol_list
        other = [s for s in listed if s not in trained_on]
        if cfg.models.symbols == "match" and other:
            what = (
                f"symbols {pooled!r} ($.provenance.symbols)"
                if isinstance(pooled, list)
                else (f"symbol {symbol!r} ($.provenance.symbol)")
            )
            raise ModelError(
                f"{path}: trained on {what}, config [market] symbols has "
                f"{other}; retrain with `offline distill --symbol`, or set [models] symbols = 'any'"
            )
        for name, tier_cfg in cfg.tiers.items():
            if name not in self.tiers:
                continue
            entry = self.tiers[name].spec.entry
            want = FEATURE_SETS.get(tier_cfg.features, ())
            if set(want) != set(entry.features):
                raise _fail(
                    name,
                    f"config [tiers.{name}] features = {tier_cfg.features!r} ({len(want)} features), the "
                    f"manifest's tier has feature_set {entry.feature_set!r} ({len(entry.features)} features);"
                    f" set features = {entry.feature_set!r} or retrain",
                )
        horizon = self.manifest.target.horizon_bars
        if horizon != cfg.distill.horizon_bars:
            raise ModelError(
                f"{path}: predicts {horizon} bar(s) ahead ($.target.horizon_bars), config [distill] "
                f"horizon_bars is {cfg.distill.horizon_bars}; set horizon_bars = {horizon} or retrain"
            )
        vol = self.manifest.vol_head
        if vol is not None and vol.horizon_bars != cfg.distill.vol_horizon_bars:
            raise ModelError(
                f"{path}: forecasts volatility over {vol.horizon_bars} bars ($.heads.vol.horizon_bars), "
                f"config [distill] vol_horizon_bars is {cfg.distill.vol_horizon_bars}; "
                f"set vol_horizon_bars = {vol.horizon_bars} or retrain"
            )
        self.check_routes(cfg.regime.routes)

    def vol_factor(self, tier: str, symbol: str, regime: str) -> float:
        """Multiplier of the graph's vol of `tier` for a bar of `symbol` in `regime`: sqrt(the symbol's own
        validation variance scale / the pooled one in the graph) for a training symbol of a pooled family,
        times sqrt(the tier's variance bias on the regime's validation rows); 1.0 for what was not fitted."""
        return self._vol_factors.get((tier, symbol), 1.0) * self._regime_factors.get((tier, regime), 1.0)

    @property
    def auto_routes(self) -> dict[str, str] | None:
        """The routes this family chose by evidence at distillation (manifest `routes`), or None."""
        choice = self.manifest.routes
        return None if choice is None else dict(choice.routes)

    def check_routes(self, routes: Mapping[str, str] | str) -> None:
        """Raise ModelError if a regime routes to a tier that is not loaded, or `routes` is "auto" and the
        family chose none."""
        resolved = resolve_routes(routes, self.auto_routes) if isinstance(routes, str) else routes
        bad = {regime: tier for regime, tier in resolved.items() if tier not in self.tiers}
        if bad:
            raise ModelError(f"regime routes {bad} name tier(s) not in the manifest, which has {self.names}")

    def predict(self, tier: str, x: npt.NDArray[np.float64]) -> float:
        """Predicted return of `tier` for one full feature vector of length N_FEATURES (float64)."""
        if x.shape != (N_FEATURES,):
            raise ValueError(
                f"expected a feature vector of shape ({N_FEATURES},) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict(x)

    def predict_rows(
        self, tier: str, x: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """`tier`'s predictions and graph vol forecasts (None: no vol head) for feature rows [N, N_FEATURES],
        in one model call; row i equals `predict(tier, x[i])` and `predict_vol(tier, x[i])`."""
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(
                f"expected feature rows of shape (N, {N_FEATURES}) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict_rows(x)

    @property
    def has_vol_head(self) -> bool:
        """True when every loaded tier has the volatility output (`manifest.heads["vol"]`)."""
        return bool(self.tiers) and all(t.has_vol_head for t in self.tiers.values())

    def predict_vol(self, tier: str, x: npt.NDArray[np.float64]) -> float | None:
        """`tier`'s forecast per-bar volatility (RMS of one-bar log returns over the manifest's vol horizon,
        a fraction) for one full feature vector, from the same ORT run as `predict(tier, x)`; None when the
        family has no vol head."""
        if x.shape != (N_FEATURES,):
            raise ValueError(
                f"expected a feature vector of shape ({N_FEATURES},) ordered as FEATURE_NAMES, got {x.shape}"
            )
        return self[tier].predict_vol(x)

    def warm(self, tier: str, *, calls: int = 2) -> None:
        """Untimed calls so the next `predict` of `tier` runs hot (call it just before the decision)."""
        self[tier].warm(calls)
