# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The forward pass of a tier: a dense ReLU MLP over one feature row, or a batch of rows, in float64.

`bot.models.forward` reads a tier's weights from its ONNX graph, folds the graph's input scaler into the first
layer and the target unscale into the last, and packs everything into one float64 `params` array (layout
below). `step` runs one full feature row (`bot.core.features.FEATURE_NAMES` order, float64), `run` loops
the same `_step` over the rows of a batch. Nothing is allocated per call: the caller owns `scratch`
(`scratch_size(params)` float64 slots) and `out`.

Each input is rounded to float32 first, as the onnxruntime path does when it fills its float32 input,
so both runtimes see the same numbers; the weights are the graph's float32 values, held exactly in
float64, and the arithmetic is float64 (docs/performance.md, "Compiled forward pass", says why).
A hidden layer is `max(0, W^T a + b)`; the output layer is linear. Its first output is the raw return;
with two heads its second is the log vol, served as `exp(log_vol) * VOL_CAL`.

Pure-Python-mode Cython: compiled at install (setup.py); uncompiled it runs as plain Python, slowly
(tests only: `bot.models.forward` serves a tier with it only when it is compiled).

Layout of `params` (float64; integers are stored exactly):

    slot          width               name       holds
       0              1               N_IN       inputs the tier reads (its feature count n)
       1              1               N_LAYERS   dense layers L (the hidden layers and the output layer)
       2              1               N_HEADS    outputs: 1 (return) or 2 (return, log vol)
       3              1               VOL_CAL    the vol head's calibration factor (1.0 with one head)
       4              1               MAX_WIDTH  the widest of the inputs and the layers
       5          L + 1               DIMS       dims[0] = n, dims[k] = width of layer k, dims[L] = N_HEADS
       6 + L          n               INDEX      each input's column in the full feature row
       6 + L + n      per layer k:    WEIGHTS    W_k [dims[k-1], dims[k]] row-major, then b_k [dims[k]]

Layout of `scratch` (float64, `scratch_size(params)` = 2 * MAX_WIDTH slots): two activation buffers,
[0, MAX_WIDTH) and [MAX_WIDTH, 2 * MAX_WIDTH); layer k reads one and writes the other.

Layout of `out` (float64, N_HEADS slots per row): [return] or [return, vol].
"""

from __future__ import annotations

import cython
import numpy as np
from cython.cimports.libc.math import exp

# The header of `params` (the table above): C constants in the compiled module.
N_IN = cython.declare(cython.Py_ssize_t, 0)
N_LAYERS = cython.declare(cython.Py_ssize_t, 1)
N_HEADS = cython.declare(cython.Py_ssize_t, 2)
VOL_CAL = cython.declare(cython.Py_ssize_t, 3)
MAX_WIDTH = cython.declare(cython.Py_ssize_t, 4)
DIMS = cython.declare(cython.Py_ssize_t, 5)

#: The header as data, visible from Python (`bot.models.forward.pack` writes it): (name, slot).
HEADER: tuple[tuple[str, int], ...] = (
    ("N_IN", N_IN),
    ("N_LAYERS", N_LAYERS),
    ("N_HEADS", N_HEADS),
    ("VOL_CAL", VOL_CAL),
    ("MAX_WIDTH", MAX_WIDTH),
    ("DIMS", DIMS),
)


@cython.cfunc
@cython.inline
def _f32(v: cython.double) -> cython.double:
    """`v` rounded to the nearest float32 (what onnxruntime's float32 input holds)."""
    if cython.compiled:
        return cython.cast(cython.float, v)
    return float(np.float32(v))


@cython.cfunc
@cython.inline
def _dense(
    params: cython.double[::1],
    w: cython.Py_ssize_t,
    n_in: cython.Py_ssize_t,
    n_out: cython.Py_ssize_t,
    scratch: cython.double[::1],
    src: cython.Py_ssize_t,
    dst: cython.Py_ssize_t,
    relu: cython.bint,
) -> cython.Py_ssize_t:
    """One dense layer: scratch[dst:dst+n_out] = b + sum_i scratch[src+i] * W[i, :] (ReLU if `relu`), W at
    params[w], b after it. Row by row (axpy), so the inner loop runs over contiguous weights and is
    vectorised; a zero input (half the ReLU outputs) skips its row, which changes no sum.

    Returns:
        The slot after this layer's parameters.
    """
    i: cython.Py_ssize_t
    j: cython.Py_ssize_t
    a: cython.double
    row: cython.Py_ssize_t
    b: cython.Py_ssize_t = w + n_in * n_out
    for j in range(n_out):
        scratch[dst + j] = params[b + j]
    for i in range(n_in):
        a = scratch[src + i]
        if a != 0.0:
            row = w + i * n_out
            for j in range(n_out):
                scratch[dst + j] += a * params[row + j]
    if relu:
        for j in range(n_out):
            if scratch[dst + j] < 0.0:  # a NaN stays NaN
                scratch[dst + j] = 0.0
    return b + n_out


@cython.cfunc
def _step(
    params: cython.double[::1], x: cython.double[::1], scratch: cython.double[::1], out: cython.double[::1]
) -> cython.double:
    n_in: cython.Py_ssize_t = cython.cast(cython.Py_ssize_t, params[N_IN])
    n_layers: cython.Py_ssize_t = cython.cast(cython.Py_ssize_t, params[N_LAYERS])
    width: cython.Py_ssize_t = cython.cast(cython.Py_ssize_t, params[MAX_WIDTH])
    index: cython.Py_ssize_t = DIMS + n_layers + 1
    w: cython.Py_ssize_t = index + n_in
    src: cython.Py_ssize_t = 0
    dst: cython.Py_ssize_t = width
    k: cython.Py_ssize_t
    i: cython.Py_ssize_t
    for i in range(n_in):
        scratch[i] = _f32(x[cython.cast(cython.Py_ssize_t, params[index + i])])
    for k in range(1, n_layers + 1):
        w = _dense(
            params,
            w,
            cython.cast(cython.Py_ssize_t, params[DIMS + k - 1]),
            cython.cast(cython.Py_ssize_t, params[DIMS + k]),
            scratch,
            src,
            dst,
            k < n_layers,
        )
        src, dst = dst, src
    out[0] = scratch[src]
    if params[N_HEADS] == 2.0:
        out[1] = exp(scratch[src + 1]) * params[VOL_CAL]
    return out[0]


@cython.ccall
def scratch_size(params: cython.double[::1]) -> cython.Py_ssize_t:
    """Float64 slots `step` and `run` need in `scratch` for these `params`."""
    return 2 * cython.cast(cython.Py_ssize_t, params[MAX_WIDTH])


@cython.ccall
def step(
    params: cython.double[::1], x: cython.double[::1], scratch: cython.double[::1], out: cython.double[::1]
) -> cython.double:
    """The forward pass of one full feature row `x` (float64, FEATURE_NAMES order).

    Returns:
        The raw return (also `out[0]`); with two heads `out[1]` holds the served vol.
    """
    return _step(params, x, scratch, out)


@cython.ccall
def run(
    params: cython.double[::1],
    x: cython.double[:, ::1],
    scratch: cython.double[::1],
    out: cython.double[:, ::1],
) -> None:
    """`step` over the rows of `x` [N, N_FEATURES]: row r's outputs go to `out[r]` [N, N_HEADS]."""
    r: cython.Py_ssize_t
    for r in range(x.shape[0]):
        _step(params, x[r], scratch, out[r])


@cython.ccall
def view(a: cython.double[::1]) -> object:
    """A typed view of the float64 array `a` (the array itself when uncompiled): passed back to `step` in
    place of the array, it skips the buffer checks a numpy array costs on every call."""
    return a
