"""The layout's import rules, read from the source (ast), not from a running interpreter.

- `bot/core/` is the pure per-bar pipeline: it imports nothing outside `bot/core/` from this project, and
  none of asyncio, websockets, aiohttp, sqlite3, structlog, onnxruntime (not even lazily in a function).
- `bot/bybit/` (the exchange edge) does not import the simulator or the service shell's app.
- Nothing in `bot/` imports `offline/`; the service shell (`bot/*.py` but `__main__`) does not import the
  simulator.
- `offline/` may import `bot/core/` and the shell's config/errors, never the service (`bot.app`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "bot.core", "bot.bybit", "bot.sim", "offline")
CORE_FORBIDDEN_LIBS = ("asyncio", "websockets", "aiohttp", "sqlite3", "structlog", "onnxruntime")


def imports_of(source: str, *, package: str) -> set[str]:
    """Fully qualified modules a source imports, anywhere in it (relative imports resolved in `package`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            if mod in PACKAGES:  # `from bot import logs` imports bot.logs
                found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _modules(folder: str) -> dict[str, set[str]]:
    out = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts)
        package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        out[name] = imports_of(path.read_text(encoding="utf-8"), package=package)
    return out


def _ours(imports: set[str]) -> set[str]:
    return {m for m in imports if m.split(".")[0] in ("bot", "offline")}


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def core_violations(modules: dict[str, set[str]]) -> list[str]:
    bad = []
    for name, imports in modules.items():
        for m in sorted(imports):
            if m.split(".")[0] in CORE_FORBIDDEN_LIBS:
                bad.append(f"{name} imports {m}")
            elif _under(m, "bot", "offline") and not _under(m, "bot.core") and m != "bot":
                bad.append(f"{name} imports {m} (outside bot/core)")
    return bad


def test_detector_sees_lazy_relative_and_from_imports() -> None:
    """Negative control: the rule check fails on every form of forbidden import."""
    src = (
        "import math\nfrom bot.core.bars import Bar\nfrom bot import config\n"
        "def f():\n    import asyncio\n    from ..ledger import Ledger\n"
    )
    imports = imports_of(src, package="bot.core")
    assert core_violations({"bot.core.x": imports}) == [
        "bot.core.x imports asyncio",
        "bot.core.x imports bot.config (outside bot/core)",
        "bot.core.x imports bot.ledger (outside bot/core)",
    ]


def test_the_folders_exist() -> None:
    for folder in ("bot/core", "bot/bybit", "bot/sim"):
        assert len(list((REPO / folder).glob("*.py"))) >= 2, folder


def test_core_is_pure() -> None:
    """bot/core imports only bot/core from this project, and no I/O, event loop, logging or ONNX library."""
    modules = _modules("bot/core")
    assert len(modules) >= 8
    assert core_violations(modules) == []


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("bot/bybit", ("bot.sim", "bot.app", "bot.ledger", "bot.tiers", "offline")),
        ("bot/sim", ("offline",)),
        ("offline", ("bot.app", "bot.sim.demo", "bot.sim.replay")),
    ],
)
def test_folder_rules(folder: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{name} imports {m}"
        for name, imports in _modules(folder).items()
        for m in sorted(_ours(imports))
        if _under(m, *forbidden)
    ]
    assert bad == []


def test_service_shell_imports_neither_offline_nor_the_simulator() -> None:
    """bot/*.py (the service) never imports offline/; only the CLI entry point reaches the simulator."""
    bad = []
    for name, imports in _modules("bot").items():
        if name.count(".") != 1:
            continue  # sub-packages have their own rules
        for m in sorted(_ours(imports)):
            if _under(m, "offline") or (_under(m, "bot.sim") and name != "bot.__main__"):
                bad.append(f"{name} imports {m}")
    assert bad == []
