"""Import rules: bot never imports offline/sklearn/skl2onnx/onnx; offline uses the one bot.core.features."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOT_MODULES = sorted(
    ".".join(p.relative_to(REPO / "bot").with_suffix("").parts)
    for p in (REPO / "bot").rglob("*.py")
    if p.stem not in ("__main__", "__init__")
)
# Training-only packages (the `offline` extra): the service must run without them installed.
FORBIDDEN = ("offline", "sklearn", "skl2onnx", "onnx")
# What only bot/core/features.py may define: the feature names, their state machine and their replay.
FEATURE_DEFINITIONS = ("FEATURE_NAMES", "FEATURE_SETS", "FeatureState", "replay_features")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def imported_modules(source: str) -> set[str]:
    """Top-level package names a module imports: import/from statements and literal importlib calls."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(_top(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(_top(node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(_top(node.args[0].value))
    return found


def test_detector_catches_every_import_form() -> None:
    """The AST detector sees plain, from, nested and importlib imports (so the rule test can fail)."""
    src = (
        "import os\nimport sklearn.linear_model as lm\nfrom offline.train import x\n"
        "def f():\n    import skl2onnx\n    return importlib.import_module('onnx.helper')\n"
        "from . import sibling\n"
    )
    assert imported_modules(src) == {"os", "sklearn", "offline", "skl2onnx", "onnx"}


@pytest.mark.parametrize("module", BOT_MODULES)
def test_bot_sources_do_not_import_training_packages(module: str) -> None:
    """No bot/*.py imports offline, sklearn, skl2onnx or onnx, even lazily inside a function."""
    path = REPO / "bot" / (module.replace(".", "/") + ".py")
    found = imported_modules(path.read_text(encoding="utf-8"))
    assert not found & set(FORBIDDEN), f"{path.relative_to(REPO)} imports {sorted(found & set(FORBIDDEN))}"


_PROBE = """
import importlib, json, sys
forbidden = {forbidden!r}
out = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    out[name] = sorted(m for m in sys.modules if m.split(".", 1)[0] in forbidden)
print(json.dumps(out))
"""


def _probe(modules: list[str]) -> dict[str, list[str]]:
    code = _PROBE.format(forbidden=FORBIDDEN, modules=modules)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=90, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, list[str]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_importing_every_bot_module_loads_no_training_package() -> None:
    """In a fresh interpreter, importing each bot module one by one leaves sys.modules free of them."""
    loaded = _probe([f"bot.{m}" for m in BOT_MODULES])
    assert set(loaded) == {f"bot.{m}" for m in BOT_MODULES}
    assert {m: mods for m, mods in loaded.items() if mods} == {}


def test_probe_detects_a_training_import() -> None:
    """Negative control: the same probe reports sklearn after importing the offline trainer."""
    trainers = [f"offline.{p.stem}" for p in (REPO / "offline").glob("*.py") if "sklearn" in p.read_text()]
    assert trainers, "offline/ has no scikit-learn module to use as the negative control"
    loaded = _probe(trainers[:1])
    assert any(m.startswith("sklearn") for m in loaded[trainers[0]])


def test_offline_uses_the_one_feature_implementation() -> None:
    """offline/ imports bot.core.features and defines no feature names, state or replay of its own."""
    importers: list[str] = []
    for path in sorted((REPO / "offline").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            from_features = isinstance(node, ast.ImportFrom) and node.module == "bot.core.features"
            if from_features or (
                isinstance(node, ast.Import) and any(a.name == "bot.core.features" for a in node.names)
            ):
                importers.append(path.name)
            defined: list[str] = []
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                defined = [node.name]
            elif isinstance(node, ast.Assign):
                defined = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined = [node.target.id]
            clash = set(defined) & set(FEATURE_DEFINITIONS)
            assert not clash, (
                f"offline/{path.name} defines {sorted(clash)}: features live only in bot/core/features.py"
            )
    assert importers, "no offline module imports bot.core.features"
