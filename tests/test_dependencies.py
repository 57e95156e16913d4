"""Declared dependencies match use: the service never loads matplotlib; the report says how to get plots."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import support

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import sys
import bot.app, bot.__main__
bot.__main__._parser()  # the CLI parser imports the demo/replay/report modules for their arguments
print(sorted(m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")))
"""


def test_service_import_graph_does_not_load_matplotlib() -> None:
    """`python -m bot run` imports bot.app and the CLI; neither pulls in matplotlib (the `plot` extra)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_matplotlib_and_sdnotify_are_not_runtime_dependencies() -> None:
    """The service installs without matplotlib (an extra that dev includes) and without sdnotify."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "matplotlib" not in names
    assert "sdnotify" not in names
    extras = project["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    assert any("plot" in d for d in extras["dev"] if d.startswith("progdistill["))


def _line(i: int) -> str:
    """A real `bar_decided` line (the DecisionRecord the service logs)."""
    from bot.core.decision import encode_line

    return encode_line(support.decision_record(i)).decode()


def test_report_without_matplotlib_skips_plots_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With matplotlib missing, latency-report writes report.json and names the extra instead of failing."""
    from bot.__main__ import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    log = tmp_path / "decisions.jsonl"
    log.write_text("\n".join(_line(i) for i in range(5)) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    assert main(["latency-report", str(log), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    notes = [x for x in printed.splitlines() if "plots skipped" in x]
    assert len(notes) == 1
    assert "pip install 'progdistill[plot]'" in notes[0]
    assert (out / "report.json").exists()
    assert not list(out.glob("*.png"))
