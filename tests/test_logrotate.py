"""The decision log rotates by size without losing or splitting a line; latency-report reads across files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import support

from bot.core.decision import DecisionRecord, encode_line
from bot.observe import logs
from bot.sim.report import read_decisions


def record(i: int) -> DecisionRecord:
    return support.decision_record(i, prediction=1e-4 * i, close=100.0 + i)


def test_rotation_keeps_whole_lines_and_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "decisions.jsonl"
    logs.configure_logging(
        fmt="json", decisions_path=path, stream=io.StringIO(), rotate_bytes=4_000, keep_files=3
    )
    log = logs.get_logger(component="test")
    try:
        for i in range(200):
            logs.write_decision(encode_line(record(i)))
            if i % 10 == 0:
                log.info("checkpoint", i=i)
    finally:
        logs.close_logging()
    files = logs.decision_log_files(path)
    assert [f.name for f in files] == [
        "decisions.jsonl.3",
        "decisions.jsonl.2",
        "decisions.jsonl.1",
        "decisions.jsonl",
    ]
    starts = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert len(text.encode()) <= 4_000
        assert text.endswith("\n")
        for line in text.splitlines():
            obj = json.loads(line)  # every line whole
            if obj["event"] == "bar_decided":
                starts.append(obj["start_ms"])
    k = starts[0] // 300_000
    assert k > 0  # the oldest were dropped with the oldest file
    assert starts == [i * 300_000 for i in range(k, 200)]  # nothing lost or reordered in what is kept
    decisions, counts = read_decisions(path)
    assert [d.start_ms for d in decisions] == starts
    assert counts["malformed"] == 0


def test_no_rotation_when_off(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    logs.configure_logging(fmt="json", decisions_path=path, stream=io.StringIO(), rotate_bytes=0)
    try:
        for i in range(100):
            logs.write_decision(encode_line(record(i)))
    finally:
        logs.close_logging()
    assert logs.decision_log_files(path) == [path]
    assert len(path.read_text().splitlines()) == 100


def test_an_existing_log_is_appended_and_rotated_by_its_real_size(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(encode_line(record(i)).decode() for i in range(20)) + "\n")
    before = path.stat().st_size
    logs.configure_logging(fmt="json", decisions_path=path, stream=io.StringIO(), rotate_bytes=before + 10)
    try:
        logs.write_decision(encode_line(record(20)))
    finally:
        logs.close_logging()
    assert logs.rotated(path, 1).stat().st_size == before  # the old content moved whole
    assert [d.start_ms for d in read_decisions(path)[0]] == [i * 300_000 for i in range(21)]
