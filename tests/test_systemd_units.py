"""The nightly retrain units: `systemd-analyze verify` clean for the timer, its service and the main unit
together, hardening and exposure like the main unit, writes confined to the models dir and reports dir,
and the offline training stack running under MemoryDenyWriteExecute (PR_SET_MDWE)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_systemd import security_exposure, unit_entries

from bot.config import load_config

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
RETRAIN = SYSTEMD / "progdistill-retrain.service"
TIMER = SYSTEMD / "progdistill-retrain.timer"
MAIN = SYSTEMD / "progdistill.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)
VENV_PYTHON = "/opt/progdistill/.venv/bin/python"


def one(path: Path) -> dict[str, str]:
    return {k: v[-1] for k, v in unit_entries(path.read_text(encoding="utf-8")).items()}


def test_retrain_unit_contract() -> None:
    """A hardened oneshot that runs `offline retrain` on the service's config, then asks the bot to reload."""
    u = one(RETRAIN)
    main = one(MAIN)
    assert u["Service.Type"] == "oneshot"
    cfg = load_config(SYSTEMD / "config.toml")
    snapshot = f"/var/lib/{u['Service.StateDirectory']}/ledger-snapshot.sqlite"
    assert u["Service.ExecStart"] == (
        f"{VENV_PYTHON} -m offline retrain --config /etc/progdistill/config.toml --ledger {snapshot}"
    )
    # the bot's private ledger is copied with full privileges ("+"), a failed copy not failing the run ("-")
    assert u["Service.ExecStartPre"] == (
        f"-+{VENV_PYTHON} -m offline snapshot-ledger --ledger {cfg.ledger.path} --out {snapshot}"
    )
    assert main["Service.ExecStart"].endswith("--config /etc/progdistill/config.toml")  # one config
    # reload only after a successful run, with full privileges ("+"), never failing the retrain ("-")
    assert u["Service.ExecStartPost"].startswith("-+/usr/bin/systemctl try-reload-or-restart ")
    assert u["Service.ExecStartPost"].endswith(" progdistill.service")
    assert u["Service.ReadWritePaths"] == cfg.models.dir
    assert f"/var/lib/{u['Service.StateDirectory']}" == cfg.retrain.reports_dir
    assert u["Service.UMask"] == "0022"  # the bot (another user) reads the versions it writes
    assert u["Service.User"] not in ("root", "progdistill")  # not the name the bot's DynamicUser takes
    for key in (
        "ProtectSystem",
        "NoNewPrivileges",
        "PrivateTmp",
        "MemoryDenyWriteExecute",
        "SystemCallFilter",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
    ):
        assert u[f"Service.{key}"] == main[f"Service.{key}"], key
    t = one(TIMER)
    assert t["Timer.Persistent"] == "true"
    assert re.fullmatch(r"\*-\*-\* 0[0-5]:\d\d:00 UTC", t["Timer.OnCalendar"])  # a quiet hour, UTC
    assert t["Timer.RandomizedDelaySec"]
    assert t["Timer.Unit"] == RETRAIN.name
    assert t["Install.WantedBy"] == "timers.target"


@needs_analyze
def test_systemd_analyze_verify_retrain_timer_and_main(tmp_path: Path) -> None:
    """`systemd-analyze verify` prints nothing for the timer, the retrain service and the main service."""
    assert ANALYZE is not None
    for unit in (RETRAIN, TIMER, MAIN):  # ExecStart= must exist: point it at this venv's python
        text = unit.read_text(encoding="utf-8").replace(VENV_PYTHON, sys.executable)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    names = [str(tmp_path / u.name) for u in (TIMER, RETRAIN, MAIN)]
    proc = subprocess.run(
        [ANALYZE, "verify", *names], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert proc.stderr.strip() == ""
    # negative control: verify does fail a broken timer
    (tmp_path / TIMER.name).write_text(
        TIMER.read_text(encoding="utf-8").replace("OnCalendar=", "OnCalendar=not-a-date "),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [ANALYZE, "verify", str(tmp_path / TIMER.name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 or "OnCalendar" in proc.stderr


@needs_analyze
def test_retrain_unit_exposure_at_most_1_5() -> None:
    """`systemd-analyze security --offline=true` rates the retrain unit like the main one (<= 1.5)."""
    rc, exposure = security_exposure(RETRAIN)
    assert rc == 0
    assert exposure <= 1.5


_MDWE_DISTILL = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN: MemoryDenyWriteExecute
    sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(4)  # the prctl did not take: the probe would prove nothing
except OSError:
    pass
from offline.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_offline_training_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """A real distillation (scikit-learn, skl2onnx, ONNX parity, matplotlib) runs with W^X enforced."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[tiers.big]\nlayers = 2\nwidth = 16\n[tiers.small]\nlayers = 1\nwidth = 8\n"
        '[regime.routes]\ncalm_trend = "small"\nnormal = "small"\nvolatile = "big"\ncrisis = "big"\n'
        "[distill]\nquick_bars = 3000\nquick_epochs = 2\nembargo_bars = 10\n",
        encoding="utf-8",
    )
    out = tmp_path / "models"
    args = ["distill", "--config", str(cfg), "--quick", "--out", str(out), "--no-progress"]
    proc = subprocess.run(
        [sys.executable, "-c", _MDWE_DISTILL, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip("kernel without PR_SET_MDWE (< 6.3): cannot emulate MemoryDenyWriteExecute here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "current" / "manifest.json").is_file()
