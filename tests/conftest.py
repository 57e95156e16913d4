"""Shared fixtures: a small but really trained tier family (offline pipeline -> ONNX + manifest)."""

from __future__ import annotations

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
