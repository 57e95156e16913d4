"""systemd unit: contract with the app, `verify` clean, exposure <= 1.5, dependencies run under MDWE."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bot.config import Config, load_config, watchdog_fresh_s

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "progdistill.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)
MAX_EXPOSURE = 1.5


def unit_entries(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values in order (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, f"unexpected time span {value!r}"
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return unit_entries(UNIT.read_text(encoding="utf-8"))


def test_unit_contract(unit: dict[str, list[str]]) -> None:
    """Type=notify, restart on failure, transient user with state/log dirs, the service CLI, hardening."""
    one = {k: v[-1] for k, v in unit.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.DynamicUser"] == "yes"
    assert one["Service.StateDirectory"] == "progdistill"
    assert one["Service.LogsDirectory"] == "progdistill"
    assert one["Service.ExecStart"].endswith(
        "/.venv/bin/python -m bot run --config /etc/progdistill/config.toml"
    )
    assert one["Service.RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert unit["Service.SystemCallFilter"][0] == "@system-service"
    for key in (
        "ProtectSystem",
        "MemoryMax",
        "MemoryDenyWriteExecute",
        "NoNewPrivileges",
        "SystemCallArchitectures",
    ):
        assert f"Service.{key}" in unit, key
    assert one["Service.ProtectSystem"] == "strict"


def test_timeouts_fit_the_app(unit: dict[str, list[str]]) -> None:
    """TimeoutStopSec covers the shutdown budget; the watchdog outlasts a ping period plus a 5 s stall."""
    stop_s = _seconds(unit["Service.TimeoutStopSec"][-1])
    watchdog_s = _seconds(unit["Service.WatchdogSec"][-1])
    assert stop_s > Config().service.shutdown_timeout_s + 5
    # Pings come every WatchdogSec/2 from the loop: a 5 s processing stall must not miss the deadline.
    assert watchdog_s / 2 + 5 < watchdog_s
    assert watchdog_s >= 30
    # A stale feed is noticed after the freshness window and acted on one WatchdogSec later.
    assert watchdog_fresh_s(Config()) + watchdog_s <= 600


def test_service_config_example(unit: dict[str, list[str]]) -> None:
    """systemd/config.toml is valid, writes only into StateDirectory/LogsDirectory, else defaults."""
    cfg = load_config(REPO / "systemd" / "config.toml")
    assert cfg.retrain.reports_dir == "/var/lib/progdistill-retrain"  # progdistill-retrain's StateDirectory
    assert cfg.ledger.path.startswith("/var/lib/progdistill/")
    assert cfg.logging.decisions_path.startswith("/var/log/progdistill/")
    assert cfg.logging.format == "json"
    assert cfg.service.shutdown_timeout_s < _seconds(unit["Service.TimeoutStopSec"][-1])
    d = Config()
    same = msgspec.structs.replace(
        cfg,
        ledger=d.ledger,
        logging=d.logging,
        models=msgspec.structs.replace(cfg.models, dir=d.models.dir),
        retrain=msgspec.structs.replace(cfg.retrain, reports_dir=d.retrain.reports_dir),
    )
    assert same == d


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` prints nothing for the unit (ExecStart pointed at this venv's python)."""
    assert ANALYZE is not None
    text = UNIT.read_text(encoding="utf-8").replace("/opt/progdistill/.venv/bin/python", sys.executable)
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert proc.stderr.strip() == ""


def security_exposure(path: Path) -> tuple[int, float]:
    """`systemd-analyze security --offline=true --threshold=15 PATH`: (exit code, overall exposure)."""
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=15", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, float(m.group(1))


@needs_analyze
def test_security_exposure_at_most_1_5(tmp_path: Path) -> None:
    """`systemd-analyze security --offline=true --threshold=15` passes with exposure <= 1.5."""
    rc, exposure = security_exposure(UNIT)
    assert rc == 0
    assert exposure <= MAX_EXPOSURE
    # Negative control: the same unit without its hardening block fails the threshold.
    bare = "\n".join(
        line
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if not line.startswith(
            ("Protect", "Private", "Restrict", "System", "Capability", "NoNew", "Memory", "Lock")
        )
    )
    stripped = tmp_path / UNIT.name
    stripped.write_text(bare, encoding="utf-8")
    rc_bare, exposure_bare = security_exposure(stripped)
    assert rc_bare != 0
    assert exposure_bare > 1.5


_MDWE_PROBE = r"""
import ctypes, mmap, sqlite3, ssl, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN: MemoryDenyWriteExecute
    sys.exit(3)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(4)  # the prctl did not take: the probe would prove nothing
except OSError:
    pass
import numpy as np, onnxruntime as ort, aiohttp, websockets, msgspec, structlog, prometheus_client
import bot.config, bot.core.features, bot.observe.logs, bot.observe.metrics
import bot.observe.notify, bot.sim.report
model = sys.stdin.buffer.read()
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
y = sess.run(None, {"x": np.ones((1, 4), np.float32)})[0]
db = sqlite3.connect(":memory:"); db.execute("create table t(x)"); db.commit()
ssl.create_default_context()
print(float(y.sum()))
"""


def _tiny_onnx() -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((4, 8), 0.5, np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_runtime_works_under_memory_deny_write_execute() -> None:
    """numpy, onnxruntime inference, sqlite, ssl and the bot modules run with W^X enforced (PR_SET_MDWE)."""
    proc = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE],
        input=_tiny_onnx(),
        cwd=REPO,
        capture_output=True,
        timeout=90,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip("kernel without PR_SET_MDWE (< 6.3): cannot emulate MemoryDenyWriteExecute here")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert float(proc.stdout.decode().strip()) == 16.0
