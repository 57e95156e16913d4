"""Import direction: offline -> bot only; nothing in bot imports offline or scikit-learn."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_bot_never_imports_offline_or_sklearn() -> None:
    """No module under bot/ imports offline, sklearn, skl2onnx or onnx-building libraries (static scan)."""
    files = sorted((REPO / "bot").rglob("*.py"))
    assert files
    for f in files:
        bad = _imported_roots(f) & {"offline", "sklearn", "skl2onnx", "tqdm"}
        assert not bad, f"{f.relative_to(REPO)} imports {sorted(bad)}"


def test_offline_builds_on_bot_features() -> None:
    """offline's training rows come from bot.core.features' kernel (the one feature code): offline/columns.py
    calls `features_of_arrays`, and offline/data.py and offline/pooled.py build rows only through it."""
    cols = (REPO / "offline" / "columns.py").read_text(encoding="utf-8")
    assert "from bot.core.features import features_of_arrays" in cols
    assert "features_of_arrays(" in cols.split("def row_arrays", 1)[1]
    for name in ("data.py", "pooled.py"):
        src = (REPO / "offline" / name).read_text(encoding="utf-8")
        assert "row_arrays(" in src, name
        assert "import features_of_arrays" not in src, name
