"""The one error tree, read from the source (ast): every error class the project defines descends from
`BotError`, has a name of its own, sits with its owner (exchange errors at the edge), and is on the map in
docs/architecture.md.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILTIN_EXCEPTIONS = {
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
}
#: Signals, not errors: raised from a signal handler through any `except Exception` (like KeyboardInterrupt).
SIGNAL_CLASSES = {"Interrupted"}


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def exception_classes(sources: dict[str, str]) -> dict[str, list[tuple[str, list[str]]]]:
    """Exception class name -> [(module, base names)], for every class whose bases reach an exception."""
    classes: dict[str, list[tuple[str, list[str]]]] = {}
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append((module, [_base_name(b) for b in node.bases]))
    known = set(BUILTIN_EXCEPTIONS)
    grew = True
    while grew:
        new = {name for name, defs in classes.items() if any(set(b) & known for _, b in defs)} - known
        known |= new
        grew = bool(new)
    return {name: defs for name, defs in classes.items() if name in known}


def ancestors(name: str, classes: dict[str, list[tuple[str, list[str]]]]) -> set[str]:
    """Every base name above `name`, through the project's classes (by name) up to the builtins."""
    seen: set[str] = set()
    todo = [b for _, bases in classes.get(name, []) for b in bases]
    while todo:
        b = todo.pop()
        if b not in seen:
            seen.add(b)
            todo.extend(x for _, bases in classes.get(b, []) for x in bases)
    return seen


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(REPO)): path.read_text(encoding="utf-8")
        for folder in ("bot", "offline")
        for path in sorted((REPO / folder).rglob("*.py"))
    }


def _project_errors() -> dict[str, list[tuple[str, list[str]]]]:
    classes = exception_classes(_sources())
    return {
        n: d
        for n, d in classes.items()
        if not n.startswith("_") and n not in SIGNAL_CLASSES and n not in BUILTIN_EXCEPTIONS
    }


def test_detector_follows_the_tree_across_modules() -> None:
    """Negative control: a class two modules down from Exception is found, a plain class is not."""
    sources = {
        "a.py": "class BotError(Exception):\n    pass\nclass Plain:\n    pass\n",
        "b.py": "from a import BotError\nclass FooError(errors.BotError):\n    pass\n",
        "c.py": "class BarError(FooError):\n    pass\nclass Odd(ValueError):\n    pass\n",
    }
    classes = exception_classes(sources)
    assert set(classes) == {"BotError", "FooError", "BarError", "Odd"}
    assert ancestors("BarError", classes) == {"FooError", "BotError", "Exception"}


def test_every_error_descends_from_bot_error() -> None:
    """Each public error class in bot/ and offline/ is a BotError (only the signal classes are not)."""
    errors = _project_errors()
    assert {"BotError", "ExchangeError", "OutputPathError"} <= set(errors)
    strays = sorted(n for n in errors if n != "BotError" and "BotError" not in ancestors(n, errors))
    assert strays == []


def test_each_error_name_is_defined_once() -> None:
    """No two error classes share a name (there is one OutputPathError)."""
    twice = {n: [m for m, _ in d] for n, d in _project_errors().items() if len(d) > 1}
    assert twice == {}


def test_exchange_errors_live_at_the_edge() -> None:
    """ExchangeError and every error below it are defined in bot/bybit/errors.py, none in the core."""
    errors = _project_errors()
    exchange = {n for n in errors if n == "ExchangeError" or "ExchangeError" in ancestors(n, errors)}
    assert {"ExchangeError", "IpBannedError", "RateLimitError"} <= exchange
    assert {n: errors[n][0][0] for n in exchange} == dict.fromkeys(exchange, "bot/bybit/errors.py")


def test_the_tree_is_on_the_map() -> None:
    """docs/architecture.md names every error class of the tree."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert sorted(n for n in _project_errors() if f"`{n}`" not in text) == []
