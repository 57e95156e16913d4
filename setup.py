"""Build step of the package: compile every kernel module in bot/core/kernels/ (pure-Python-mode Cython,
all but __init__.py, by glob) to a C extension. Everything else about the package is in pyproject.toml.

Ahead of time, at install, because the service's systemd unit keeps MemoryDenyWriteExecute=yes, under which
a JIT cannot allocate executable memory (docs/architecture.md, "Kernels").
"""

from __future__ import annotations

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNEL_DIR = Path("bot/core/kernels")
# -ffp-contract=off: no fused multiply-add, so the compiled kernels round exactly as the plain-Python run
# (the parity tests compare the two); gcc contracts by default on targets that have FMA.
COMPILE_ARGS = ["-ffp-contract=off"]

extensions = [
    Extension(f"bot.core.kernels.{path.stem}", [path.as_posix()], extra_compile_args=COMPILE_ARGS)
    for path in sorted(KERNEL_DIR.glob("*.py"))
    if path.name != "__init__.py"
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}))
