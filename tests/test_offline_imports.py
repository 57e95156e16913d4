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
    """offline/data.py replays bot.core.features (the one feature code), it does not re-implement it."""
    src = (REPO / "offline" / "data.py").read_text(encoding="utf-8")
    assert "from bot.core.features import" in src
    assert "replay_features" in src
