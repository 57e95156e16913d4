"""Offline side: datasets, teacher training, progressive distillation, export of the tier family.

`pipeline_distill(cfg, data="synthetic", out_dir=..., quick=True)` runs the whole thing (see
`offline/pipeline.py`); `python -m offline distill|fetch` is the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline.pipeline import pipeline_distill

__all__ = ["pipeline_distill"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m offline fetch` and the data tests do not import scikit-learn.
    if name == "pipeline_distill":
        from offline.pipeline import pipeline_distill

        return pipeline_distill
    raise AttributeError(f"module 'offline' has no attribute {name!r}")
