"""The walk-forward fold table: means over folds and seeds per model (`summary_rows`), the plain-text
report (`format_walkforward`, walkforward.txt) and the JSON document (`to_json`, walkforward.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from bot.models.manifest import ReturnSkill

METRICS: Final = (
    "vol_r2",
    "vol_ic",
    "vol_qlike",
    "vol_qlike_bc",
    "vol_retention",
    "vol_fidelity_r2",
    "ic",
    "params",
    "compression",
    "train_s",
)
BASELINES: Final = {"har": "HAR-RV", "har_tod": "HAR-RV + hour"}


@dataclass(slots=True)
class WalkForward:
    """The fold table: one row per (fold, seed, symbol, model); baselines have `seed` None (no training).

    Each row: `fold`, `seed`, `symbol` (each pooled symbol is scored on its own rows), `tier` (tier name,
    or "baseline"), `variant` ("teacher", "progressive", "progressive_no_transfer", "one_shot", "scratch",
    or a `BASELINES` key), `recipe`, `chosen` (exported by validation for its size), `stage`, and the
    `METRICS` (None where undefined).
    """

    rows: list[dict[str, Any]]
    folds: list[dict[str, Any]]
    info: dict[str, Any]


_TABLE_COLUMNS: Final = (
    ("vol R2", "vol_r2", "{:+.4f}"),
    ("vol IC", "vol_ic", "{:+.3f}"),
    ("QLIKE", "vol_qlike", "{:.4f}"),
    ("QLIKE bc", "vol_qlike_bc", "{:.4f}"),
    ("retain", "vol_retention", "{:.3f}"),
    ("fidel R2", "vol_fidelity_r2", "{:+.3f}"),
    ("ret IC", "ic", "{:+.4f}"),
)


def _label(row: Mapping[str, Any]) -> tuple[str, str]:
    if row["tier"] == "baseline":
        return "baseline", BASELINES.get(row["variant"], row["variant"])
    return row["tier"], row["variant"]


def summary_rows(wf: WalkForward) -> list[dict[str, Any]]:
    """Mean of every metric over folds and seeds per (tier, variant), plus the exported pick per tier
    (variant "exported": whichever recipe validation chose in each fold and seed), in table order."""
    keys: list[tuple[str, str]] = []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in wf.rows:
        group = [_label(r)] + ([(r["tier"], "exported")] if r["chosen"] and r["variant"] != "teacher" else [])
        for k in group:
            if k not in groups:
                keys.append(k)
                groups[k] = []
            groups[k].append(r)
    base = [k for k in keys if k[0] == "baseline"]
    rest = [k for k in keys if k[0] != "baseline"]
    tiers = list(dict.fromkeys(k[0] for k in rest))
    ordered = base + sorted(rest, key=lambda k: (tiers.index(k[0]), k[1] != "exported"))
    out: list[dict[str, Any]] = []
    for k in ordered:
        rs = groups[k]
        mean: dict[str, Any] = {"tier": k[0], "variant": k[1], "n": len(rs)}
        for m in METRICS:
            vals = [r[m] for r in rs if r[m] is not None]
            mean[m] = float(np.mean(vals)) if vals else None
        out.append(mean)
    return out


def format_walkforward(wf: WalkForward) -> str:
    """Plain text: the mean over folds and seeds per model, then every fold's rows."""
    head = ["tier", "variant", "n", *(h for h, _, _ in _TABLE_COLUMNS)]

    def line(row: Mapping[str, Any], first: str, second: str) -> list[str]:
        cells = [(f.format(row[k]) if row.get(k) is not None else "-") for _, k, f in _TABLE_COLUMNS]
        return [first, second, str(row.get("n", "")), *cells]

    summary = [line(r, r["tier"], r["variant"]) for r in summary_rows(wf)]
    per_fold = []
    for r in wf.rows:
        tier, variant = _label(r)
        seed = "" if r["seed"] is None else f" s{r['seed']}"
        seed += f" {r['symbol']}" if wf.info["pooled"] else ""
        per_fold.append(
            line({**r, "n": f"f{r['fold']}{seed}"}, tier, variant + (" *" if r["chosen"] else ""))
        )
    over = "folds, seeds and symbols" if wf.info["pooled"] else "folds and seeds"
    out = [f"mean over {over} (test blocks):"]
    out += _render(head, summary)
    out += ["", "per fold (f = fold, s = seed; * = exported by validation):"]
    out += _render(["tier", "variant", "fold", *head[3:]], per_fold)
    info = wf.info
    spans = "; ".join(
        f"fold {f['fold']}: {f['train_rows']} train / {f['val_rows']} val / {f['test_rows']} test rows"
        for f in wf.folds
    )
    out += [
        "",
        f"{info['n_folds']} expanding folds over {info['n_rows']} rows (first {info['first_train_frac']:.0%} "
        f"training only), embargo {info['embargo_rows']} bars; {spans}.",
        f"vol head: log realised vol over the next {info['vol_horizon_bars']} bars; QLIKE bc with the "
        "variance scale fitted on the fold's training rows; retain = vol R2 / teacher's; fidel R2 = "
        "R2 of the student's log vol against the teacher's; ret IC = return head's Spearman IC. HAR fitted "
        "on the fold's training rows. No family was exported.",
    ]
    if info.get("return_skill"):
        skill = msgspec.convert(info["return_skill"], ReturnSkill)
        out.append(f"return head (teacher, pooled over the test blocks): {skill.text()}")
    for r in info.get("routes") or []:
        t = r["test"]
        routes = ", ".join(f"{k} -> {v}" for k, v in r["routes"].items())
        out.append(
            f"fold {r['fold']} routes (chosen on its validation rows): {routes}; on its test block vol QLIKE "
            f"{t['qlike_vs_teacher']:+.2%} vs always-teacher at {t['cost_ratio_vs_teacher']:.1%} of its "
            "multiply-adds"
        )
    return "\n".join(out)


def _render(head: list[str], lines: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]

    def render(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return [render(head), "  ".join("-" * w for w in widths), *(render(r) for r in lines)]


def to_json(wf: WalkForward) -> dict[str, Any]:
    """The JSON document `offline distill --folds` writes (`walkforward.json`)."""
    return {"info": wf.info, "folds": wf.folds, "summary": summary_rows(wf), "rows": wf.rows}
