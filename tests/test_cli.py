"""`python -m bot` command line: exit codes and messages for bad config and bad models, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support import small_config, to_toml

REPO = Path(__file__).resolve().parents[1]


def run_bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m bot ARGS` in `cwd` (the repo is importable from the installed package)."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_bad_config_names_the_key_and_exits_2_before_touching_state(tmp_path: Path) -> None:
    """A config with an out-of-range value exits 2, names file and key path, and creates no state or log."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[ledger]\npath = "state/ledger.sqlite"\n[logging]\ndecisions_path = "logs/d.jsonl"\n'
        "[regime]\nmin_dwell_bars = 0\n",
        encoding="utf-8",
    )
    proc = run_bot("run", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.toml" in proc.stderr
    assert "$.regime.min_dwell_bars" in proc.stderr
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "logs").exists()


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    """An unknown key exits 2 and names the section that does not know it."""
    cfg = tmp_path / "typo.toml"
    cfg.write_text("[paper]\nnotional = 5.0\n", encoding="utf-8")
    proc = run_bot("run", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert "notional" in proc.stderr
    assert "$.paper" in proc.stderr


def test_missing_models_refuse_to_start_with_exit_3(tmp_path: Path) -> None:
    """No manifest in the models dir: exit 3 with a message saying how to build one; no ledger is created."""
    cfg = small_config(
        ledger={"path": str(tmp_path / "state" / "ledger.sqlite")},
        logging={"decisions_path": str(tmp_path / "logs" / "d.jsonl"), "format": "json"},
        models={"dir": str(tmp_path / "no-models")},
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    proc = run_bot("run", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "python -m offline distill" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_wrong_feature_version_refuses_to_start(trained_family: Path, tmp_path: Path) -> None:
    """A manifest trained on another feature version exits 3 naming the versions; no ledger is created."""
    import json

    models = tmp_path / "models"
    shutil.copytree(trained_family, models)
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["feature_version"] = "0"
    (models / "manifest.json").write_text(json.dumps(manifest))
    cfg = small_config(
        ledger={"path": str(tmp_path / "state" / "ledger.sqlite")},
        logging={"decisions_path": str(tmp_path / "logs" / "d.jsonl"), "format": "json"},
        models={"dir": str(models)},
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg), encoding="utf-8")
    proc = run_bot("run", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "feature_version" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_demo_distills_again_only_for_its_own_stale_family(trained_family: Path, tmp_path: Path) -> None:
    """`bot demo` reuses a demo family that fits, distills a new version when its own (synthetic) family no
    longer fits this bot (an older feature version), and never replaces a user's family: a model error."""
    import json

    import pytest

    from bot.core.errors import ModelError
    from bot.sim.demo import demo_family_reason

    base = small_config()
    missing = tmp_path / "none"
    assert demo_family_reason(base, missing) == f"no tier family in {missing}/: distilling one"
    models = tmp_path / "models"
    shutil.copytree(trained_family, models)
    assert demo_family_reason(base, models) is None  # fits: reused
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["provenance"]["source"] == "synthetic"
    manifest["feature_version"] = "0"
    (models / "manifest.json").write_text(json.dumps(manifest))
    reason = demo_family_reason(base, models)
    assert reason is not None
    assert "does not fit this bot" in reason
    assert "feature_version" in reason
    manifest["provenance"]["source"] = "csv"  # a user's family: never distilled over
    (models / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=r"feature_version.*pass --models DIR"):
        demo_family_reason(base, models)
