"""A tier's compiled forward pass, built from its own ONNX file and proven equal to onnxruntime at load.

onnxruntime is the reference runtime. A tier may instead be served by `bot.core.kernels.mlp`, whose weights
come from the tier's ONNX graph and nowhere else: `bot.models.onnxgraph.read_graph` decodes the file (the bot
does not depend on the `onnx` package), `match_mlp` accepts exactly the graph `offline.export.tier_to_onnx`
writes and refuses anything else, `pack` folds the input scaler into the first layer and the target
unscale into the last. `choose_forward` then runs both runtimes
on the verification rows (`verification_rows`) and serves the compiled pass only if every output agrees
within `PARITY_ATOL`; otherwise the tier keeps onnxruntime and the choice says why (the service logs it).

The graph that is accepted, in node order (skl2onnx's Pipeline(StandardScaler, MLPRegressor), then export's
unscale and heads):

    Scaler(x; offset[n], scale[n])                 ai.onnx.ml; z = (x - offset) * scale
    [Cast(to=float)]
    (MatMul(W_k) -> Add(b_k) -> Relu) x hidden     W_k float [in, out], b_k float [1, out] or [out]
    MatMul(W_L) -> Add(b_L)                        out = heads (1 or 2)
    Reshape([-1, 1]) [-> Reshape([-1, 2])]         the second only with two heads
    Mul(y_scale[heads]) -> Add(y_mean[heads])      the raw targets; with one head this is `y`
    with two heads: Gather(axis=1, [0]) -> y;  Gather(axis=1, [1]) -> Exp -> Mul(vol_calibration[1]) -> vol

Every initializer must be used once, every weight must be finite, the graph's one input and its outputs
must be the manifest's names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from bot.core import kernels
from bot.core.errors import ModelError
from bot.core.features import N_FEATURES
from bot.core.kernels import mlp
from bot.models.onnxgraph import FLOAT, Graph, Node, read_graph

if TYPE_CHECKING:
    import onnxruntime as ort

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: Largest |compiled - onnxruntime| allowed on any verification row and output (absolute).
PARITY_ATOL: Final = 1e-6
#: Verification rows: scaler-standardised points N(0, VERIFY_SD^2) per feature, plus the mean and two
#: rows at +-VERIFY_FAR standard deviations (`verification_rows`).
#: Above this many multiply-adds per row onnxruntime keeps the tier (benchmarks/mlp_forward.py, hot p50 with
#: warm caches as the engine's warm-up leaves them: staging 3x128 on 33 inputs, 37k, is 2.3x faster compiled;
#: research 3x256 on 50, 144k, is no faster with random weights and 1.3x slower with a distilled family's).
MAX_MULTIPLY_ADDS: Final = 65_536
VERIFY_ROWS: Final = 64
VERIFY_SD: Final = 2.0
VERIFY_FAR: Final = 6.0
_VERIFY_SEED: Final = 20_260_021

Runtime = Literal["compiled", "onnxruntime"]

#: The kernel's `params` header slots by name (`bot.core.kernels.mlp.HEADER`).
_SLOT: Final = dict(mlp.HEADER)


# ---- the expected structure ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MlpWeights:
    """A tier's network as its graph holds it (float32 values, unfolded)."""

    offset: F32  # Scaler: z = (x - offset) * scale, [n]
    scale: F32
    layers: tuple[tuple[F32, F32], ...]  # (W [in, out], b [out]) per dense layer; ReLU between them
    y_scale: F32  # [heads]
    y_mean: F32
    vol_calibration: float | None  # two heads: vol = exp(log_vol) * vol_calibration

    @property
    def heads(self) -> int:
        return int(self.y_scale.shape[0])


class _Walk:
    """Takes the graph's nodes in order, checking each one's operator and that it consumes the last value."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.pos = 0
        self.used: set[str] = set()

    def peek(self) -> str:
        return self.graph.nodes[self.pos].op if self.pos < len(self.graph.nodes) else ""

    def take(self, op: str, value: str, *, domain: str = "", n_inputs: int = 2) -> Node:
        if self.pos >= len(self.graph.nodes):
            raise ModelError(f"the graph ends where a {op} node was expected")
        node = self.graph.nodes[self.pos]
        where = f"node {self.pos} ({node.op}"
        if node.op != op or node.domain not in (domain, "ai.onnx" if domain == "" else domain):
            raise ModelError(f"{where}, domain {node.domain!r}): expected {op}")
        if len(node.inputs) != n_inputs or len(node.outputs) != 1 or node.inputs[0] != value:
            raise ModelError(f"{where}): expected {n_inputs} input(s) starting with {value!r} and one output")
        self.pos += 1
        return node

    def init(
        self, node: Node, kind: type[np.generic], shape: tuple[int, ...] | None = None
    ) -> npt.NDArray[np.generic]:
        """The node's second input, which must be an initializer of `kind` (and `shape`) used only here."""
        name = node.inputs[1]
        a = self.graph.initializers.get(name)
        if a is None or a.dtype != kind:
            raise ModelError(f"{node.op} input {name!r}: expected a {np.dtype(kind).name} initializer")
        if shape is not None and a.shape != shape:
            raise ModelError(f"{node.op} input {name!r}: shape {list(a.shape)}, expected {list(shape)}")
        if name in self.used:
            raise ModelError(f"initializer {name!r} is used twice")
        self.used.add(name)
        return a


def _no_attrs(node: Node, **want: int) -> None:
    if node.attrs != want:
        raise ModelError(f"{node.op} attributes {node.attrs}, expected {want}")


def match_mlp(graph: Graph, *, input_name: str, output_name: str, vol_output_name: str | None) -> MlpWeights:
    """The weights of a graph that has exactly the structure in the module docstring.

    Raises:
        ModelError: the graph differs anywhere (the message names the first difference).
    """
    if graph.inputs != [input_name]:
        raise ModelError(f"graph inputs {graph.inputs}, expected [{input_name!r}]")
    want_out = [output_name] if vol_output_name is None else [output_name, vol_output_name]
    if graph.outputs != want_out:
        raise ModelError(f"graph outputs {graph.outputs}, expected {want_out}")
    if not set(graph.opsets) <= {"", "ai.onnx.ml"}:
        raise ModelError(f"operator set domains {sorted(graph.opsets)}, expected '' and 'ai.onnx.ml'")
    walk = _Walk(graph)
    offset, scale, value = _match_scaler(walk, input_name)
    layers, value = _match_layers(walk, value, len(offset))
    heads = int(layers[-1][1].shape[0])
    if heads != len(want_out):
        raise ModelError(f"the network has {heads} output(s), the manifest names {len(want_out)} head(s)")
    y_scale, y_mean, cal = _match_heads(walk, value, heads, output_name, vol_output_name)
    if walk.pos != len(graph.nodes):
        extra = [nd.op for nd in graph.nodes[walk.pos :]]
        raise ModelError(f"{len(extra)} node(s) after the expected graph: {extra}")
    unused = sorted(set(graph.initializers) - walk.used)
    if unused:
        raise ModelError(f"initializer(s) {unused} are not part of the expected graph")
    weights = MlpWeights(
        offset=np.array(offset, dtype=np.float32),
        scale=np.array(scale, dtype=np.float32),
        layers=tuple(layers),
        y_scale=y_scale.astype(np.float32),
        y_mean=y_mean.astype(np.float32),
        vol_calibration=cal,
    )
    parts = [
        weights.offset,
        weights.scale,
        weights.y_scale,
        weights.y_mean,
        *(a for lay in layers for a in lay),
    ]
    if not all(np.isfinite(a).all() for a in parts) or not np.isfinite(cal if cal is not None else 0.0):
        raise ModelError("a weight, scaler or unscale value is not finite")
    return weights


def _match_scaler(
    walk: _Walk, input_name: str
) -> tuple[list[float] | list[int], list[float] | list[int], str]:
    """The input Scaler (and an optional Cast to float): `(offset, scale, the value it leaves)`."""
    scaler = walk.take("Scaler", input_name, domain="ai.onnx.ml", n_inputs=1)
    offset, scale = scaler.attrs.get("offset"), scaler.attrs.get("scale")
    if (
        set(scaler.attrs) != {"offset", "scale"}
        or not isinstance(offset, list)
        or not isinstance(scale, list)
    ):
        raise ModelError(f"Scaler attributes {sorted(scaler.attrs)}, expected offset and scale (floats)")
    n = len(offset)
    if n == 0 or len(scale) != n:
        raise ModelError(f"Scaler offset has {n} values and scale {len(scale)}, expected one per input")
    value = scaler.outputs[0]
    if walk.peek() == "Cast":
        cast = walk.take("Cast", value, n_inputs=1)
        _no_attrs(cast, to=FLOAT)
        value = cast.outputs[0]
    return offset, scale, value


def _match_layers(walk: _Walk, value: str, width: int) -> tuple[list[tuple[F32, F32]], str]:
    """The dense layers (MatMul, Add, Relu between them) up to the first Reshape: `(layers, the value they
    leave)`; `width` is the input width."""
    layers: list[tuple[F32, F32]] = []
    while True:
        mm = walk.take("MatMul", value)
        w = walk.init(mm, np.float32)
        if w.ndim != 2 or w.shape[0] != width:
            raise ModelError(f"MatMul weight {mm.inputs[1]!r}: shape {list(w.shape)}, expected [{width}, k]")
        width = int(w.shape[1])
        add = walk.take("Add", mm.outputs[0])
        b = walk.init(add, np.float32)
        if b.shape not in ((1, width), (width,)):
            raise ModelError(f"Add bias {add.inputs[1]!r}: shape {list(b.shape)}, expected [1, {width}]")
        _no_attrs(mm)
        _no_attrs(add)
        layers.append((w.astype(np.float32), b.reshape(-1).astype(np.float32)))
        value = add.outputs[0]
        after = walk.peek()
        if after == "Reshape":
            return layers, value
        if after != "Relu":
            raise ModelError(
                f"node {walk.pos} ({after or 'the end of the graph'}): expected Relu after a hidden layer or "
                "Reshape after the output layer"
            )
        relu = walk.take("Relu", value, n_inputs=1)
        _no_attrs(relu)
        value = relu.outputs[0]


def _match_heads(
    walk: _Walk, value: str, heads: int, output_name: str, vol_output_name: str | None
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic], float | None]:
    """The reshapes, the unscale (Mul, Add) and with two heads the vol head (Gather, Exp, Mul):
    `(y_scale, y_mean, vol_calibration)`."""
    for shape in ([-1, 1], [-1, 2]) if heads == 2 else ([-1, 1],):
        reshape = walk.take("Reshape", value)
        got = walk.init(reshape, np.int64, (2,))
        if got.tolist() != shape:
            raise ModelError(f"Reshape to {got.tolist()}, expected {shape}")
        _no_attrs(reshape)
        value = reshape.outputs[0]
    mul = walk.take("Mul", value)
    y_scale = walk.init(mul, np.float32, (heads,))
    add = walk.take("Add", mul.outputs[0])
    y_mean = walk.init(add, np.float32, (heads,))
    _no_attrs(mul)
    _no_attrs(add)
    raw = add.outputs[0]
    cal: float | None = None
    if heads == 1:
        if raw != output_name:
            raise ModelError(f"the unscaled output is {raw!r}, expected the graph output {output_name!r}")
    else:
        for index, name in ((0, output_name), (1, "")):
            gather = walk.take("Gather", raw)
            if walk.init(gather, np.int64, (1,)).tolist() != [index]:
                raise ModelError(f"Gather {gather.outputs[0]!r}: expected index [{index}]")
            _no_attrs(gather, axis=1)
            if name and gather.outputs[0] != name:
                raise ModelError(f"the return head is {gather.outputs[0]!r}, expected {name!r}")
            value = gather.outputs[0]
        exp = walk.take("Exp", value, n_inputs=1)
        _no_attrs(exp)
        mul = walk.take("Mul", exp.outputs[0])
        cal = float(walk.init(mul, np.float32, (1,))[0])
        _no_attrs(mul)
        if mul.outputs[0] != vol_output_name:
            raise ModelError(f"the vol head is {mul.outputs[0]!r}, expected {vol_output_name!r}")
    return y_scale, y_mean, cal


# ---- packing and choice --------------------------------------------------------------------------------


def pack(weights: MlpWeights, index: npt.NDArray[np.intp]) -> F64:
    """The kernel's `params` array (`bot.core.kernels.mlp`'s layout): the scaler folded into the first layer
    (W' = diag(scale) W, b' = b - (offset * scale) W) and the unscale into the last (column h times
    y_scale[h], bias b * y_scale + y_mean), all in float64 from the graph's float32 values.

    Args:
        index: each tier input's column in the full feature row.
    """
    n = int(weights.offset.shape[0])
    if index.shape != (n,):
        raise ModelError(f"the graph takes {n} inputs, the tier lists {index.shape[0]} features")
    offset, scale = weights.offset.astype(np.float64), weights.scale.astype(np.float64)
    folded = [(w.astype(np.float64), b.astype(np.float64)) for w, b in weights.layers]
    w0, b0 = folded[0]
    folded[0] = (scale[:, None] * w0, b0 - (offset * scale) @ w0)
    wl, bl = folded[-1]
    ys, ym = weights.y_scale.astype(np.float64), weights.y_mean.astype(np.float64)
    folded[-1] = (wl * ys[None, :], bl * ys + ym)
    dims = [n, *(int(w.shape[1]) for w, _ in folded)]
    header = np.zeros(_SLOT["DIMS"], dtype=np.float64)
    header[_SLOT["N_IN"]] = n
    header[_SLOT["N_LAYERS"]] = len(folded)
    header[_SLOT["N_HEADS"]] = weights.heads
    header[_SLOT["VOL_CAL"]] = 1.0 if weights.vol_calibration is None else weights.vol_calibration
    header[_SLOT["MAX_WIDTH"]] = max(dims)
    parts = [header, np.array(dims, dtype=np.float64), index.astype(np.float64)]
    for w, b in folded:
        parts.extend([w.reshape(-1), b])
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float64)


def multiply_adds(weights: MlpWeights) -> int:
    """Multiply-adds of one row's forward pass (the dense layers)."""
    return sum(int(w.shape[0]) * int(w.shape[1]) for w, _ in weights.layers)


def verification_rows(weights: MlpWeights, index: npt.NDArray[np.intp], *, rows: int = VERIFY_ROWS) -> F64:
    """Full feature rows [rows + 3, N_FEATURES], the same for the same graph: the tier's columns are the
    scaler's mean plus its standard deviation times N(0, VERIFY_SD^2) draws (a fixed seed), then the mean
    itself and the mean +-VERIFY_FAR standard deviations with alternating signs; other columns are 0."""
    n = int(index.shape[0])
    sd = 1.0 / weights.scale.astype(np.float64)  # StandardScaler: scale = 1 / std
    rng = np.random.default_rng(_VERIFY_SEED)
    z = np.vstack(
        [
            rng.standard_normal((rows, n)) * VERIFY_SD,
            np.zeros((1, n)),
            VERIFY_FAR * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[None, :],
            -VERIFY_FAR * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[None, :],
        ]
    )
    out = np.zeros((z.shape[0], N_FEATURES), dtype=np.float64)
    out[:, index] = weights.offset.astype(np.float64) + z * sd
    return out


@dataclass(frozen=True, slots=True)
class ForwardChoice:
    """Which runtime serves a tier, and why.

    Attributes:
        runtime: "compiled" (bot.core.kernels.mlp) or "onnxruntime".
        reason: for "compiled", the parity it proved; for "onnxruntime", why the compiled pass was not used.
        params: the kernel's parameter array (None with onnxruntime).
        max_abs_err: the largest |compiled - onnxruntime| on the verification rows; None if not measured.
        refused: True when the compiled pass was built or tried and failed (an unexpected graph or a parity
            mismatch: the service warns); False for a choice by policy (the switch, the size, no compiler).
    """

    runtime: Runtime
    reason: str
    params: F64 | None = None
    max_abs_err: float | None = None
    refused: bool = False


def compiled_outputs(params: F64, x: F64) -> F64:
    """The kernel's outputs [N, heads] for full feature rows `x` [N, N_FEATURES] (one `mlp.run`)."""
    rows = np.ascontiguousarray(x, dtype=np.float64)
    out = np.zeros((rows.shape[0], int(params[_SLOT["N_HEADS"]])), dtype=np.float64)
    mlp.run(params, rows, np.zeros(mlp.scratch_size(params), dtype=np.float64), out)
    return out


def onnx_outputs(session: ort.InferenceSession, names: list[str], x: F64, index: npt.NDArray[np.intp]) -> F64:
    """onnxruntime's outputs [N, len(names)] for full feature rows (the tier's columns cast to float32)."""
    sub = np.ascontiguousarray(x[:, index], dtype=np.float32)
    got = session.run(names, {session.get_inputs()[0].name: sub})
    return np.column_stack([np.asarray(g, dtype=np.float64).reshape(-1) for g in got])


def choose_forward(
    data: bytes,
    session: ort.InferenceSession,
    index: npt.NDArray[np.intp],
    *,
    input_name: str,
    output_name: str,
    vol_output_name: str | None,
    enabled: bool = True,
    require_compiled: bool = True,
    max_multiply_adds: int | None = None,
) -> ForwardChoice:
    """Build the compiled forward pass from the tier's ONNX bytes and prove it equal to `session`.

    Args:
        data: the tier's verified ONNX file bytes (the single source of the weights).
        session: the tier's onnxruntime session (the reference).
        index: each tier input's column in the full feature row.
        enabled: `[models] compiled_forward`; False keeps onnxruntime.
        require_compiled: keep onnxruntime when the kernel runs as plain Python (much slower than
            onnxruntime); tests pass False to check the plain-Python kernel.
        max_multiply_adds: the size above which onnxruntime keeps the tier; None = MAX_MULTIPLY_ADDS.

    Returns:
        "compiled" with the kernel's params when every output of every verification row agrees within
        PARITY_ATOL, else "onnxruntime" with the reason.
    """
    if not enabled:
        return ForwardChoice("onnxruntime", "[models] compiled_forward = false")
    if require_compiled and not kernels.compiled().get("mlp", False):
        return ForwardChoice(
            "onnxruntime",
            "bot.core.kernels.mlp is not compiled here (plain Python is slower than onnxruntime)",
        )
    try:
        weights = match_mlp(
            read_graph(data), input_name=input_name, output_name=output_name, vol_output_name=vol_output_name
        )
        params = pack(weights, index)
    except ModelError as exc:
        return ForwardChoice("onnxruntime", f"unexpected graph structure: {exc}", refused=True)
    macs, limit = (
        multiply_adds(weights),
        MAX_MULTIPLY_ADDS if max_multiply_adds is None else max_multiply_adds,
    )
    if macs > limit:
        return ForwardChoice(
            "onnxruntime", f"{macs} multiply-adds per row, above {limit}: onnxruntime is faster at this size"
        )
    rows = verification_rows(weights, index)
    names = [output_name] if vol_output_name is None else [output_name, vol_output_name]
    return prove(params, session, names, rows, index)


def prove(
    params: F64, session: ort.InferenceSession, names: list[str], rows: F64, index: npt.NDArray[np.intp]
) -> ForwardChoice:
    """ "compiled" if the kernel with `params` equals `session` within PARITY_ATOL on every output of `rows`
    (non-finite values count as a mismatch), else "onnxruntime" naming the worst output and its error."""
    want = onnx_outputs(session, names, rows, index)
    got = compiled_outputs(params, rows)
    err = np.abs(got - want)
    worst = float(np.max(np.where(np.isfinite(err), err, np.inf)))
    if not worst <= PARITY_ATOL:
        col = int(np.argmax(np.max(np.where(np.isfinite(err), err, np.inf), axis=0)))
        return ForwardChoice(
            "onnxruntime",
            f"parity: output {names[col]!r} differs from onnxruntime by {worst:.3g} on {len(rows)} "
            f"verification rows, more than {PARITY_ATOL:g}",
            max_abs_err=worst,
            refused=True,
        )
    return ForwardChoice(
        "compiled",
        f"equal to onnxruntime within {worst:.2g} (<= {PARITY_ATOL:g}) on {len(rows)} verification rows",
        params=params,
        max_abs_err=worst,
    )
