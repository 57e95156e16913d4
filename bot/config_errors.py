"""Config errors as one line a user can act on: `$.key.path: expected ..., got ...`.

msgspec reports where a value failed (`$.tiers[...].layers`) and why; `describe` resolves dict keys to
their names, lists the known keys of an unknown one, and appends the value that came. `non_finite` finds
NaN/inf numbers, which TOML allows and no key accepts.
"""

from __future__ import annotations

import math
import re
import types
import typing
from typing import Annotated, Any, Literal

import msgspec


def non_finite(data: Any, where: str = "$") -> str | None:
    """The key path of the first NaN or infinite number in a decoded TOML document (TOML has inf and nan)."""
    if isinstance(data, float) and not math.isfinite(data):
        return f"{where}: expected a finite number, got {data}"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = non_finite(value, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}")
        if found is not None:
            return found
    return None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_MISSING: Any = object()


def _unwrap(tp: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` down to the underlying type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            # `dict[str, str] | Literal["auto"]`: a path that goes below the value goes into the container
            nested = [a for a in args if typing.get_origin(_unwrap(a)) in (dict, list) or _is_struct(a)]
            if len(args) != 1 and len(nested) != 1:
                return tp
            tp = args[0] if len(args) == 1 else nested[0]
        else:
            return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _pick(tp: Any, token: str | int) -> Any:
    """`tp` unwrapped; a union that is still one (`list[str] | Selection`) gives the member a path can go
    below with `token`: a struct or dict for a key, a list for an index."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp
    for arg in map(_unwrap, typing.get_args(tp)):
        keyed = _is_struct(arg) or typing.get_origin(arg) is dict
        if (isinstance(token, str) and keyed) or (isinstance(token, int) and typing.get_origin(arg) is list):
            return arg
    return tp


def _child_type(tp: Any, token: str | int) -> Any:
    """The schema type one step below `tp` (a struct field, a dict value, a list item), or None."""
    tp = _pick(tp, token)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and isinstance(token, str):
        return typing.get_type_hints(tp, include_extras=True).get(token)
    origin = typing.get_origin(tp)
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    return None


def _resolve(data: Any, path: str, root: Any) -> tuple[str, Any, Any]:
    """Turn msgspec's `$.tiers[...].layers` into `$.tiers.big.layers`; return (path, value, schema type).

    msgspec reports dict keys as `[...]`; the failing key is found by validating each entry alone.
    """
    out = "$"
    value: Any = data
    tp: Any = root
    for m in _TOKEN.finditer(path):
        name, index = m.group(1), m.group(2)
        if name is not None:
            out += f".{name}"
            value = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
            tp = _child_type(tp, name)
        elif index == "...":
            child = _child_type(tp, "...")
            bad = None
            if isinstance(value, dict) and child is not None:
                for key, item in value.items():
                    try:
                        msgspec.convert(item, child, strict=True)
                    except msgspec.ValidationError:
                        bad = key
                        break
            out += f".{bad}" if bad is not None else "[...]"
            value = value[bad] if bad is not None else _MISSING
            tp = child
        else:
            i = int(index)
            out += f"[{i}]"
            value = value[i] if isinstance(value, list) and i < len(value) else _MISSING
            tp = _child_type(tp, i)
    return out, value, tp


def describe(exc: msgspec.ValidationError, data: dict[str, Any], root: Any) -> str:
    """One `$.key.path: expected ..., got ...` line for a msgspec validation error of `data` decoded as
    the struct type `root`."""
    m = _AT.match(str(exc))
    assert m is not None  # the pattern matches any string
    msg, path = m.group("msg"), m.group("path") or "$"
    where, value, tp = _resolve(data, path, root)
    unknown = re.match(r"Object contains unknown field `(?P<key>[^`]*)`", msg)
    if unknown:
        key = unknown.group("key")
        struct = _pick(tp, key)
        known = [f.name for f in msgspec.structs.fields(struct)] if isinstance(struct, type) else []
        return f"{where}.{key}: unknown key; expected one of {known}"
    missing = re.match(r"Object missing required field `(?P<key>[^`]*)`", msg)
    if missing:
        return f"{where}.{missing.group('key')}: required key is missing"
    literal = _unwrap(tp)
    if msg.startswith("Invalid enum value") and typing.get_origin(literal) is Literal:
        return f"{where}: expected one of {list(typing.get_args(literal))}, got {value!r}"
    text = msg.replace("`", "")
    text = text[:1].lower() + text[1:]
    if value is not _MISSING:
        text += f" {value!r}" if ", got " in text else f", got {value!r}"
    return f"{where}: {text}"
