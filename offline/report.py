"""Report of a distillation run: `report.json`, a printed table, and the retention/fidelity plot.

With a volatility head the table gains the vol head's test metrics (R^2 of log vol, Spearman IC, QLIKE raw
and bias-corrected), two baseline rows (HAR-RV and HAR-RV + hour-of-day, fitted on the same training rows)
and a line saying which exported tiers beat them (`report["vol_vs_har"]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from bot.models.manifest import ReturnSkill, RouteChoice
from offline.distill import DistillResult
from offline.routes import routes_table_text

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (header, metrics key, format)
    ("params", "params", "{:,.0f}"),
    ("compr", "compression", "{:.1f}x"),
    ("val R2", "val_r2", "{:+.4f}"),
    ("test R2", "test_r2", "{:+.4f}"),
    ("retain", "r2_retention", "{:.2f}"),
    ("fidel R2", "fidelity_r2", "{:+.3f}"),
    ("fidel r", "fidelity_corr", "{:+.3f}"),
    ("IC", "ic", "{:+.4f}"),
    ("hit", "hit_rate", "{:.3f}"),
    ("loss", "distill_loss", "{:.4f}"),
    ("epochs", "best_epoch", "{:.0f}"),
    ("train s", "train_s", "{:.1f}"),
)
_VOL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("vol R2", "vol_r2", "{:+.4f}"),
    ("vol IC", "vol_ic", "{:+.3f}"),
    ("QLIKE", "vol_qlike", "{:.4f}"),
    ("QLIKE bc", "vol_qlike_bc", "{:.4f}"),
    ("var scale", "vol_var_scale", "{:.3f}"),
    ("QLIKE srv", "vol_qlike_served", "{:.4f}"),
)
#: Baseline key in `info["vol_baselines"]` -> its name in the table.
_BASELINES = {"har": "HAR-RV", "har_tod": "HAR-RV + hour"}


def vol_vs_har(result: DistillResult) -> dict[str, Any]:
    """Per baseline, the exported tiers whose vol head beats it on the test rows on both R^2 of log vol and
    bias-corrected QLIKE (lower is better); {} without a vol head."""
    baselines = result.info.get("vol_baselines") or {}
    out: dict[str, Any] = {}
    for key, base in baselines.items():
        beat = []
        for name in result.tier_names:
            m = result.chosen[name].metrics
            r2, q = m.get("vol_r2"), m.get("vol_qlike_bc")
            if r2 is not None and q is not None and r2 > base["vol_r2"] and q < base["vol_qlike_bc"]:
                beat.append(name)
        out[key] = {"beat": beat, "vol_r2": base["vol_r2"], "vol_qlike_bc": base["vol_qlike_bc"]}
    return out


def build_report(result: DistillResult, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every candidate's metrics, which recipe won each size, and whether the transfer set helped."""
    rows: list[dict[str, Any]] = []
    for name in result.tier_names:
        for c in result.candidates[name]:
            rows.append(
                {
                    "tier": name,
                    "stage": c.stage,
                    "recipe": c.recipe,
                    "variant": c.variant,
                    "alpha": c.alpha,
                    "temperature": c.temperature,
                    "transfer_set": c.transfer,
                    "hidden": list(c.model.hidden),
                    "n_features": len(c.model.features),
                    "chosen": result.chosen[name] is c,
                    "metrics": dict(c.metrics),
                    "val_mse_history": c.fit.history,
                }
            )
    transfer: list[dict[str, Any]] = []
    for name in result.tier_names[1:]:
        by = {c.variant: c for c in result.candidates[name]}
        if "progressive" in by and "progressive_no_transfer" in by:
            w, wo = by["progressive"].metrics, by["progressive_no_transfer"].metrics
            transfer.append(
                {
                    "tier": name,
                    "val_r2_with": w["val_r2"],
                    "val_r2_without": wo["val_r2"],
                    "test_r2_with": w["test_r2"],
                    "test_r2_without": wo["test_r2"],
                    "fidelity_r2_with": w["fidelity_r2"],
                    "fidelity_r2_without": wo["fidelity_r2"],
                    "helps_on_val": (w["val_r2"] or 0.0) > (wo["val_r2"] or 0.0),
                }
            )
    return {
        "info": result.info,
        "chosen": {
            name: {"recipe": c.recipe, "variant": c.variant, "val_r2": c.metrics["val_r2"]}
            for name, c in result.chosen.items()
        },
        "transfer_set": transfer,
        "vol_vs_har": vol_vs_har(result),
        "candidates": rows,
        "provenance": manifest["provenance"],
        "versions": manifest["versions"],
        "return_skill": manifest.get("return_skill"),
        "routes": manifest.get("routes"),
        "regime_calibration": manifest.get("regime_calibration"),
    }


def _fmt(fmt: str, v: Any) -> str:
    return "-" if v is None else fmt.format(v)


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: one line per candidate, `*` marks the model exported for that size."""
    info = report["info"]
    baselines = info.get("vol_baselines") or {}
    columns = _COLUMNS + (_VOL_COLUMNS if info.get("vol_head") else ())
    if info.get("vol_head") and (info.get("pooled_symbols") or 1) > 1:
        columns += (("vol R2/sym", "vol_r2_sym", "{:+.4f}"),)
    head = ["", "tier", "variant", *(h for h, _, _ in columns)]
    lines: list[list[str]] = []
    for row in report["candidates"]:
        m = row["metrics"]
        lines.append(
            [
                "*" if row["chosen"] else "",
                row["tier"],
                row["variant"],
                *(_fmt(f, m.get(k)) for _, k, f in columns),
            ]
        )
    for key, base in baselines.items():
        lines.append(
            ["", "baseline", _BASELINES.get(key, key), *(_fmt(f, base.get(k)) for _, k, f in columns)]
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]

    def render(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    out = [render(head), "  ".join("-" * w for w in widths)]
    out += [render(r) for r in lines]
    return "\n".join([*out, "", *_notes(report)])


def _notes(report: dict[str, Any]) -> list[str]:
    """The lines under the table: the run's sizes and seed, the heads, regime shares and routes."""
    info = report["info"]
    out: list[str] = []
    schedule = (  # reports written before the schedule option was added carry no schedule
        f"alpha schedule {info['alpha_schedule']} (alpha_max {info['alpha_max']:g}), "
        if "alpha_schedule" in info
        else ""
    )
    out.append(
        f"teacher rows {info['teacher_rows']}, student rows {info['student_rows']}, transfer rows "
        f"{info['transfer_rows']}, val {info['val_rows']}, test {info['test_rows']}; "
        f"epochs <= {info['epochs']}, {schedule}"
        f"seed {info['seed']}. * = exported (best validation score of its size). retain = test R2 / "
        "teacher's (- when the teacher's test R2 <= 0);\nfidel R2 / fidel r = R2 / correlation of the "
        "student against the teacher's test outputs."
    )
    if report.get("return_skill"):
        skill = msgspec.convert(report["return_skill"], ReturnSkill)
        out.append(f"return head: {skill.text()}")
    if info.get("vol_head"):
        out.append(
            f"vol head: log realised vol over the next {info['vol_horizon_bars']} bars; vol R2 = R2 of log "
            "vol, QLIKE bc = QLIKE after the variance scale fitted on the training rows; the score is the "
            "mean validation R2 of both heads. Baselines fitted on the same training rows."
        )
        if (info.get("pooled_symbols") or 1) > 1:
            out.append(
                f"pooled over {info['pooled_symbols']} symbols (one scaler, the same calendar splits): "
                "vol R2 and QLIKE over all test rows; vol R2/sym = mean over symbols of each symbol's own R2."
            )
        for key, v in report.get("vol_vs_har", {}).items():
            beat = ", ".join(v["beat"]) or "none"
            out.append(
                f"tiers beating {_BASELINES.get(key, key)} (vol R2 {v['vol_r2']:+.4f}, QLIKE bc "
                f"{v['vol_qlike_bc']:.4f}) on both vol R2 and QLIKE bc: {beat}"
            )
        out.append(
            "served vol = exp(log vol) x sqrt(var scale), the variance scale fitted on the validation rows "
            "and folded into each graph's vol output; QLIKE srv = the served forecast's test QLIKE, to set "
            "against a baseline's QLIKE bc (its own training-fitted scale)."
        )
    cal = report.get("regime_calibration") or {}
    if cal.get("per_symbol"):
        out.append(
            f"regimes on relative vol ({cal.get('method')}), share of each symbol's training bars "
            "(calm_trend / normal / volatile / crisis; before hysteresis):"
        )
        for sym, entry in cal["per_symbol"].items():
            sh = entry["shares"]
            out.append(f"  {sym:<12} " + " / ".join(f"{sh[k]:.1%}" for k in sh))
    if report.get("routes"):
        out.extend(routes_table_text(msgspec.convert(report["routes"], RouteChoice)))
    return out


def plot_report(report: dict[str, Any], path: Path, *, title: str = "") -> None:
    """PNG: R2 retention and fidelity vs compression, one line per recipe (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4.5))
    panels = (
        ("test_r2", "test R² (labels)"),
        ("r2_retention", "R² retention (student / teacher)"),
        ("fidelity_r2", "fidelity R² (vs teacher outputs)"),
        ("fidelity_corr", "fidelity correlation (vs teacher outputs)"),
    )
    styles = {
        "progressive": ("tab:blue", "o-"),
        "progressive_no_transfer": ("tab:cyan", "s--"),
        "one_shot": ("tab:orange", "^-"),
        "scratch": ("tab:green", "v-"),
    }
    teacher = next(r for r in report["candidates"] if r["recipe"] == "teacher")
    for ax, (key, label) in zip(axes, panels, strict=True):
        for variant, (color, style) in styles.items():
            pts = [r for r in report["candidates"] if r["variant"] == variant]
            xs = [r["metrics"]["compression"] for r in pts]
            ys = [r["metrics"][key] for r in pts]
            if not pts or all(y is None for y in ys):
                continue
            ax.plot([1.0, *xs], [teacher["metrics"][key], *ys], style, color=color, label=variant)
        chosen = [r for r in report["candidates"] if r["chosen"] and r["metrics"][key] is not None]
        ax.scatter(
            [r["metrics"]["compression"] for r in chosen],
            [r["metrics"][key] for r in chosen],
            s=160,
            facecolors="none",
            edgecolors="black",
            label="exported",
        )
        if not chosen:
            ax.text(
                0.5, 0.5, "undefined: teacher test R² <= 0", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xscale("log")
        ax.set_xlabel("compression vs teacher (params, log)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
