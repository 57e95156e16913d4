"""A reader for the few parts of an ONNX model file the compiled forward pass needs (`bot.models.forward`).

The service does not depend on the `onnx` package (tests/test_imports.py), so this module decodes the
protobuf wire format of a ModelProto itself: the graph's nodes (operator, domain, inputs, outputs and
int / floats / ints attributes), its float32 and int64 initializers (raw or typed data), its input and
output names and the operator sets. Anything else that could change what the graph computes (another
attribute kind, external or sparse data, another tensor type) is refused with ModelError, never skipped.
tests/test_forward.py checks it against the onnx package on the trained test family.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from bot.core.errors import ModelError

# ONNX TensorProto.DataType values this reader accepts
FLOAT: Final = 1
INT64: Final = 7


# ---- protobuf wire format ------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelError("truncated or malformed protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message: an int for a varint, bytes else."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ModelError(f"protobuf wire type {wire} is not supported (field {number})")
        if pos > end:
            raise ModelError(f"truncated protobuf message (field {number})")
        yield number, wire, value


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ModelError("protobuf: expected a length-delimited field, got a varint")
    return value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _ints(wire: int, value: int | bytes, into: list[int]) -> None:
    """A repeated int64 field, packed or not."""
    if isinstance(value, int):
        into.append(_int64(value))
        return
    pos = 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        into.append(_int64(v))


def _floats(wire: int, value: int | bytes, into: list[float]) -> None:
    """A repeated float field, packed (wire type 2) or one fixed32 value."""
    raw = _bytes(value)
    if len(raw) % 4:
        raise ModelError("protobuf: a packed float field's length is not a multiple of 4")
    into.extend(float(v) for v in np.frombuffer(raw, dtype="<f4"))


# ---- the graph -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    """One NodeProto: its operator, domain, input/output value names and attributes."""

    op: str = ""
    domain: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attrs: dict[str, int | list[float] | list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class Graph:
    """The parts of a ModelProto the forward pass needs."""

    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, npt.NDArray[np.float32] | npt.NDArray[np.int64]] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)


def _name(buf: bytes) -> str:
    """The `name` (field 1) of a ValueInfoProto."""
    for number, _, value in _fields(buf):
        if number == 1:
            return _bytes(value).decode()
    return ""


def _node(buf: bytes) -> Node:
    node = Node()
    for number, _, value in _fields(buf):
        if number == 1:
            node.inputs.append(_bytes(value).decode())
        elif number == 2:
            node.outputs.append(_bytes(value).decode())
        elif number == 4:
            node.op = _bytes(value).decode()
        elif number == 7:
            node.domain = _bytes(value).decode()
        elif number == 5:
            name, attr = _attribute(_bytes(value))
            node.attrs[name] = attr
    return node


def _attribute(buf: bytes) -> tuple[str, int | list[float] | list[int]]:
    name = ""
    ints: list[int] = []
    floats: list[float] = []
    single: int | None = None
    for number, wire, value in _fields(buf):
        if number == 1:
            name = _bytes(value).decode()
        elif number == 3 and isinstance(value, int):
            single = _int64(value)
        elif number == 7:
            _floats(wire, value, floats)
        elif number == 8:
            _ints(wire, value, ints)
        elif number in (2, 4, 5, 6, 9, 10, 11, 21, 22, 23):  # f, s, t, g, lists, a reference, sparse
            raise ModelError(f"attribute {name or '?'}: an attribute kind this reader does not accept")
    if single is not None:
        return name, single
    return name, floats if floats else ints


def _tensor(buf: bytes) -> tuple[str, npt.NDArray[np.float32] | npt.NDArray[np.int64]]:
    name, dtype = "", 0
    dims: list[int] = []
    floats: list[float] = []
    ints: list[int] = []
    raw: bytes | None = None
    for number, wire, value in _fields(buf):
        if number == 1:
            _ints(wire, value, dims)
        elif number == 2 and isinstance(value, int):
            dtype = value
        elif number == 4:
            _floats(wire, value, floats)
        elif number == 7:
            _ints(wire, value, ints)
        elif number == 8:
            name = _bytes(value).decode()
        elif number == 9:
            raw = _bytes(value)
        elif number in (5, 6, 10, 11, 13, 14):  # other typed data, external data, data_location
            raise ModelError(
                f"initializer {name or '?'}: a storage this reader does not accept (field {number})"
            )
    shape = tuple(dims)
    if dtype == FLOAT:
        f32 = np.frombuffer(raw, dtype="<f4") if raw is not None else np.array(floats, dtype=np.float32)
        _check_size(name, f32.size, shape)
        return name, f32.astype(np.float32).reshape(shape)
    if dtype == INT64:
        i64 = np.frombuffer(raw, dtype="<i8") if raw is not None else np.array(ints, dtype=np.int64)
        _check_size(name, i64.size, shape)
        return name, i64.astype(np.int64).reshape(shape)
    raise ModelError(f"initializer {name!r}: data type {dtype}, expected float (1) or int64 (7)")


def _check_size(name: str, size: int, shape: tuple[int, ...]) -> None:
    if size != int(np.prod(shape, dtype=np.int64)):
        raise ModelError(f"initializer {name!r}: {size} values for shape {list(shape)}")


def read_graph(data: bytes) -> Graph:
    """Decode the parts of an ONNX ModelProto (`data`, the file's bytes) the forward pass needs.

    Raises:
        ModelError: the bytes are not a model this reader understands (the message says what).
    """
    graph = Graph()
    body: bytes | None = None
    for number, _, value in _fields(data):
        if number == 7:
            body = _bytes(value)
        elif number == 8:
            domain, version = "", 0
            for n, _, v in _fields(_bytes(value)):
                if n == 1:
                    domain = _bytes(v).decode()
                elif n == 2 and isinstance(v, int):
                    version = v
            graph.opsets[domain] = version
    if body is None:
        raise ModelError("no graph in the model")
    for number, _, value in _fields(body):
        if number == 1:
            graph.nodes.append(_node(_bytes(value)))
        elif number == 5:
            name, tensor = _tensor(_bytes(value))
            if name in graph.initializers:
                raise ModelError(f"initializer {name!r} appears twice")
            graph.initializers[name] = tensor
        elif number == 11:
            graph.inputs.append(_name(_bytes(value)))
        elif number == 12:
            graph.outputs.append(_name(_bytes(value)))
        elif number in (14, 15):  # quantization_annotation, sparse_initializer
            raise ModelError(f"graph field {number} (sparse initializers or quantization) is not accepted")
    return graph
