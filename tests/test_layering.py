"""The layout's import rules, read from the source (ast), not from a running interpreter.

- `bot/core/` is the pure per-bar pipeline: it imports nothing outside `bot/core/` from this project, and
  none of asyncio, websockets, aiohttp, sqlite3, structlog, onnxruntime (not even lazily in a function).
- `bot/bybit/` (the exchange edge) does not import the simulator or the service shell's app.
- Nothing in `bot/` imports `offline/`; the service shell (`bot/*.py` but `__main__`) does not import the
  simulator.
- `offline/` may import `bot/core/` and the shell's config/errors, never the service (`bot.app`).
- No import cycle among `bot/` and `offline/` modules, counting imports under `if TYPE_CHECKING:` and inside
  functions: shared types live in the module below both users.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = tuple(
    ".".join(init.parent.relative_to(REPO).parts)
    for folder in ("bot", "offline")
    for init in sorted((REPO / folder).rglob("__init__.py"))
)
CORE_FORBIDDEN_LIBS = ("asyncio", "websockets", "aiohttp", "sqlite3", "structlog", "onnxruntime")


def _from_module(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, relative imports resolved in `package`."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, *, package: str) -> set[str]:
    """Fully qualified modules a source imports, anywhere in it (relative imports resolved in `package`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, package)
            found.add(mod)
            if mod in PACKAGES:  # `from bot.observe import logs` imports bot.observe.logs
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


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if path.stem == "__init__" else rel.parts)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules its source imports, anywhere in it (TYPE_CHECKING blocks, functions).

    `sources` maps a module's dotted name to its text; a package is named as its folder (its `__init__`).
    `from pkg import sub` depends on the module `pkg.sub` when there is one, else on `pkg`'s `__init__`; an
    import of a module not in `sources` counts as one of its longest prefix that is.
    """
    packages = {name for name in sources if any(other.startswith(name + ".") for other in sources)}

    def known(dotted: str) -> str | None:
        parts = dotted.split(".")
        return next((m for n in range(len(parts), 0, -1) if (m := ".".join(parts[:n])) in sources), None)

    graph: dict[str, set[str]] = {}
    for name, source in sources.items():
        package = name if name in packages else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets.update(known(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                mod = _from_module(node, package)
                targets.update(
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in sources else known(mod) for a in node.names
                )
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


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
        "bot.core.x imports bot.ledger.Ledger (outside bot/core)",
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
        ("bot/bybit", ("bot.sim", "bot.app", "bot.consumer", "bot.ledger", "bot.models", "bot.observe")),
        ("bot/bybit", ("offline",)),
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


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [
        # the exchange edge knows itself and the core (its settings are its own: bot/bybit/settings.py)
        ("bot/bybit", ("bot.bybit", "bot.core")),
        # the ledger and the model family sit under the service: the core, and the one logging setup
        # (the shadow scorer's score types are what the ledger stores)
        ("bot/ledger", ("bot.ledger", "bot.core", "bot.outputs", "bot.observe.logs", "bot.observe.shadow")),
        ("bot/models", ("bot.models", "bot.core", "bot.config", "bot.observe.logs")),
        # the observers read decisions, the ledger and the family; they never reach the service or the sim
        ("bot/observe", ("bot.observe", "bot.core", "bot.bybit", "bot.outputs", "bot.config", "bot.ledger",
                         "bot.models")),
    ],
)  # fmt: skip
def test_package_imports_only_what_its_job_needs(folder: str, allowed: tuple[str, ...]) -> None:
    """Each package of the shell imports only the packages below it (its docstring says its job)."""
    bad = [
        f"{name} imports {m}"
        for name, imports in _modules(folder).items()
        for m in sorted(_ours(imports))
        if m not in PACKAGES and not _under(m, *allowed)
    ]
    assert bad == []


def test_observers_never_call_back_into_the_engine() -> None:
    """One pass after the decision: the observers get each decided bar once (`Decided`: record and feature
    row) and import neither the engine nor the service that drives it."""
    bad = [
        f"{name} imports {m}"
        for name, imports in _modules("bot/observe").items()
        for m in sorted(_ours(imports))
        if _under(m, "bot.core.engine", "bot.consumer", "bot.app")
    ]
    assert bad == []


def test_every_package_says_what_it_owns() -> None:
    """bot/'s top level holds only what wires the service; every package opens with a docstring."""
    top = sorted(p.name for p in (REPO / "bot").glob("*.py"))
    assert top == [
        "__init__.py", "__main__.py", "app.py", "config.py", "config_errors.py", "consumer.py",
        "interrupts.py", "outputs.py", "shutdown.py",
    ]  # fmt: skip
    for init in (REPO / "bot").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc is not None, init
        assert len(doc) > 40, init


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


def test_cycle_detector_sees_type_checking_and_lazy_imports() -> None:
    """Negative control: a cycle closed only under `if TYPE_CHECKING:` or inside a function is reported."""
    sources = {
        "offline": "def __getattr__(name):\n    from offline.e import E\n",
        "offline.a": "from offline.b import B\n",
        "offline.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from offline.a import A\n",
        "offline.c": "def f():\n    from . import d\n",
        "offline.d": "import offline.c\n",
        "offline.e": "from offline import a\n",  # the module offline.a, not the package: no cycle
        "offline.f": "from offline.g import G\n",
        "offline.g": "def f():\n    from offline import f\n",
    }
    assert import_cycles(import_graph(sources)) == [
        ["offline.a", "offline.b"],
        ["offline.c", "offline.d"],
        ["offline.f", "offline.g"],
    ]


def test_no_import_cycles() -> None:
    """No cycle among bot/ and offline/ modules, not even one closed only by a TYPE_CHECKING import."""
    sources = {
        _module_name(path): path.read_text(encoding="utf-8")
        for folder in ("bot", "offline")
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    graph = import_graph(sources)
    assert len(graph) > 80
    assert import_cycles(graph) == []
