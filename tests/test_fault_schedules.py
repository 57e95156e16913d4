"""benchmarks/fault_schedules.py's multi-connection mode, one short schedule: exactly-once per symbol."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_schedules.py"


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_schedules", BENCHMARK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fault_schedules", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(90)
async def test_a_multi_connection_fault_schedule_decides_every_bar_of_every_symbol_once(
    trained_family: Path, tmp_path: Path
) -> None:
    """20 symbols on 3 connections through drops per connection, REST errors in gap fills and confirm
    faults: every closed bar of every symbol is in the ledger and the decision log exactly once."""
    fs = _benchmark()
    scale = dataclasses.replace(
        fs.multi_scale(20, connections=3, bars=16, bar_seconds=0.3), pause_s=(0.05, 0.4)
    )
    row = await fs.one_seed(3, scale, trained_family, tmp_path, 60.0)
    assert row["connections"] == 3
    assert row["complete"], row
    assert row["reconnects"] >= 1, row
    assert row["closed"] >= 20 * 10
    assert (row["missing"], row["doubled"], row["unexpected"]) == (0, 0, 0), row["examples"]
