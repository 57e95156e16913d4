"""Per-bar math as kernels over plain float64 state arrays, compiled ahead of time (docs/architecture.md).

Every module here except this one is a pure-Python-mode Cython module: `pip install` compiles each of them
to a C extension (setup.py, by glob), and Python's import system prefers the extension over the `.py`
beside it. Uncompiled, the same `.py` runs as plain Python (it needs the `cython` package for its
annotations, a dev dependency).

`PROGDISTILL_PURE_KERNELS=1` in the environment makes this package load every kernel from its `.py` even
where the extension exists: mutation testing and the pure-Python test runs use it. `compiled()` says which
kernels run compiled in this process; `load_pure(name)` loads a kernel's plain-Python twin beside the
compiled one (the parity tests compare the two).
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np

_HERE: Final = Path(__file__).resolve().parent
#: The kernel modules (every `.py` here but this one), by name.
KERNELS: Final[tuple[str, ...]] = tuple(sorted(p.stem for p in _HERE.glob("*.py") if p.stem != "__init__"))
#: Set to "1" to run every kernel as plain Python (the `.py`), compiled or not.
PURE_ENV: Final = "PROGDISTILL_PURE_KERNELS"


def load_pure(name: str, *, module_name: str | None = None) -> ModuleType:
    """Load kernel `name` from its `.py` source as plain Python, under `module_name` (default: a private
    name beside the compiled one, so both can be imported at once).

    Raises:
        KeyError: `name` is not a kernel here (the message lists them).
    """
    if name not in KERNELS:
        raise KeyError(f"unknown kernel {name!r}; known: {list(KERNELS)}")
    full = module_name or f"{__name__}._pure_{name}"
    loader = importlib.machinery.SourceFileLoader(full, str(_HERE / f"{name}.py"))
    spec = importlib.util.spec_from_loader(full, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    loader.exec_module(module)
    for attr, value in list(vars(module).items()):
        if inspect.isfunction(value) and value.__module__ == full and not attr.startswith("_"):
            setattr(module, attr, _like_c(value))
    return module


def _like_c(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn` with numpy's overflow and underflow warnings off: uncompiled, a kernel's values are numpy
    scalars read from its state array, which warn where the compiled C silently gives IEEE inf or a
    subnormal (a volume of 1e-309 makes vol_chg's ratio inf, clipped to 10 either way). Division by zero and
    invalid operations still warn (compiled, with Cython's default checks, they raise)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(over="ignore", under="ignore"):
            return fn(*args, **kwargs)

    return call


def compiled() -> dict[str, bool]:
    """For each kernel, whether this process runs it as a compiled extension (False: plain Python)."""
    out: dict[str, bool] = {}
    for name in KERNELS:
        module = importlib.import_module(f"{__name__}.{name}")
        out[name] = isinstance(
            getattr(module.__spec__, "loader", None), importlib.machinery.ExtensionFileLoader
        )
    return out


if os.environ.get(PURE_ENV) == "1":
    for _name in KERNELS:
        if f"{__name__}.{_name}" not in sys.modules:
            load_pure(_name, module_name=f"{__name__}.{_name}")
