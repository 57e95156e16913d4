"""Shared fixtures: a small but really trained tier family (offline pipeline -> ONNX + manifest)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import small_config


@pytest.fixture(scope="session")
def trained_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick tier family trained by the real offline pipeline on the synthetic market."""
    from offline.pipeline import pipeline_distill

    out = tmp_path_factory.mktemp("family") / "models"
    pipeline_distill(small_config(), data="synthetic", out_dir=out, quick=True)
    return out


@pytest.fixture(autouse=True)
def _logging_to_a_live_stream() -> Iterator[None]:
    """After each test, log to the process's real stdout again. A test that runs a CLI `main()` leaves
    logging on pytest's captured stderr of that test, which is closed once the test ends; the next test
    that logs without configuring first would fail with "I/O operation on closed file"."""
    yield
    from bot.observe import logs

    logs.close_logging()
    logs.configure_logging(level="info", fmt="json", stream=sys.__stdout__)
