"""`python -m bot latency-report LOG [--out DIR] [--models DIR]`: per-tier latency, PnL and bar counts from
the decision log, and (with `--models`) the return head's measured skill of each family the log names.

Reads the JSONL decision log (`logging.decisions_path`), keeps the canonical `bar_decided` lines (schema in
docs/architecture.md), ignores every other event and counts lines that are not JSON objects or whose
`bar_decided` fields are missing or mistyped. A bar decided twice (same symbol and `start_ms`, e.g. logged
again after a crash before the ledger commit) is counted in `duplicates` and only its last line is kept.

Writes `report.json` plus `latency_<tier>.png` (histogram and CDF of each stage) to the output directory
(staged in a temporary sibling and swapped in at the end; an existing directory is replaced only when it is
empty or a previous latency report: `bot.outputs`) and returns the report dict. A log without one decision
(empty, garbage, another file) is an error: exit 2 with the reason on stderr.
PnL per tier/regime sums each line's `realized_pnl_usd` and `fee_usd`, which
are the amounts booked on that bar (not running totals).

A day of the whole exchange (500 symbols x 1,440 one-minute bars = 720k lines, ~430 MB over the rotated
files) is read one line at a time and each kept decision is held as a slim `ReportRow` (the fields the
report uses, names shared), not as the whole record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from bot.core.decision import BAR_DECIDED, DecisionRecord, decode_line
from bot.core.errors import BotError, ModelError
from bot.models.manifest import MANIFEST_NAME, Manifest, ReturnSkill, decode_manifest
from bot.observe.logs import decision_log_files
from bot.outputs import OutputPathError, StagedOutput

STAGES: Final[tuple[str, ...]] = ("features", "regime", "inference", "paper", "total", "recv_to_decision")
QUANTILES: Final[tuple[tuple[str, float], ...]] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


class ReportError(BotError):
    """The decision log cannot be read."""


class ReportRow(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What the report keeps of one decided bar; `latency_us` in `STAGES` order, NaN where not logged."""

    symbol: str
    start_ms: int
    source: str
    regime: str
    tier: str
    realized_pnl_usd: float
    fee_usd: float
    unrealized_pnl_usd: float
    model_sha: str
    latency_us: tuple[float, ...]

    @classmethod
    def of(cls, d: DecisionRecord, names: dict[str, str]) -> ReportRow:
        """From a decoded record; `names` shares one string object per distinct name across rows."""

        def name(x: str) -> str:
            return names.setdefault(x, x)

        lat = d.latency_us
        return cls(
            name(d.symbol),
            d.start_ms,
            name(d.source),
            name(d.regime),
            name(d.tier),
            d.realized_pnl_usd,
            d.fee_usd,
            d.unrealized_pnl_usd,
            name(d.model_sha),
            tuple(lat.get(stage, math.nan) for stage in STAGES),
        )


def read_decisions(log_path: str | Path) -> tuple[list[ReportRow], dict[str, int]]:
    """Parse the log and its rotated files (`<log>.N` ... `<log>.1`, then `<log>`), one line at a time;
    returns the kept decisions (in log order) and line counts.

    Counts: `lines`, `decisions` (kept), `other_events`, `malformed`, `duplicates`.
    """
    path = Path(log_path)
    counts = Counter({"lines": 0, "decisions": 0, "other_events": 0, "malformed": 0, "duplicates": 0})
    by_key: dict[tuple[str, int], ReportRow] = {}
    names: dict[str, str] = {}
    try:
        if not path.exists():
            path.read_bytes()  # the error that names what is wrong
        for part in decision_log_files(path):
            with part.open("rb") as f:
                for line in f:
                    _read_line(line, counts, by_key, names)
    except OSError as exc:
        raise ReportError(f"{path}: cannot read decision log: {exc.strerror}") from exc
    counts["decisions"] = len(by_key)
    if not by_key:
        seen = f"{counts['lines']} line(s): {counts['other_events']} other events"
        seen += f", {counts['malformed']} malformed"
        raise ReportError(
            f"{path}: no bar_decided lines among {seen}; expected a decision log (logging.decisions_path)"
        )
    return list(by_key.values()), dict(counts)


def _read_line(
    line: bytes, counts: Counter[str], by_key: dict[tuple[str, int], ReportRow], names: dict[str, str]
) -> None:
    """Count one log line; keep it (the last of its symbol and bar) when it is a decision."""
    if not line.strip():
        return
    counts["lines"] += 1
    try:
        d = decode_line(line)
    except msgspec.ValidationError:
        # valid JSON but not a decision record: another event, or a damaged decision line
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            obj = None
        other = isinstance(obj, dict) and obj.get("event") != BAR_DECIDED
        counts["other_events" if other else "malformed"] += 1
        return
    except msgspec.DecodeError:
        counts["malformed"] += 1
        return
    row = ReportRow.of(d, names)
    key = (row.symbol, row.start_ms)
    if key in by_key:
        counts["duplicates"] += 1
        del by_key[key]  # re-insert so the kept line sits where the last one was logged
    by_key[key] = row


def _stage_values(decisions: list[ReportRow], stage: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    i = STAGES.index(stage)
    vals = np.fromiter((d.latency_us[i] for d in decisions), dtype=np.float64, count=len(decisions))
    return vals[np.isfinite(vals)]


def _summary(values: np.ndarray[Any, np.dtype[np.float64]]) -> dict[str, float] | None:
    if values.size == 0:
        return None
    out = {name: float(np.percentile(values, q)) for name, q in QUANTILES}
    out["max"] = float(values.max())
    out["mean"] = float(values.mean())
    return out


def _pnl(decisions: list[ReportRow]) -> dict[str, float | int]:
    return {
        "bars": len(decisions),
        "realized_pnl_usd": float(sum(d.realized_pnl_usd for d in decisions)),
        "fee_usd": float(sum(d.fee_usd for d in decisions)),
    }


def build_report(decisions: list[ReportRow], counts: dict[str, int]) -> dict[str, Any]:
    """The report dict: counts, latency quantiles per tier and stage, PnL per tier, regime and source."""
    tiers: dict[str, list[ReportRow]] = defaultdict(list)
    regimes: dict[str, list[ReportRow]] = defaultdict(list)
    sources: Counter[str] = Counter()
    for d in decisions:
        tiers[d.tier].append(d)
        regimes[d.regime].append(d)
        sources[d.source] += 1
    per_tier: dict[str, Any] = {}
    for name in sorted(tiers):
        rows = tiers[name]
        per_tier[name] = {
            **_pnl(rows),
            "latency_us": {stage: _summary(_stage_values(rows, stage)) for stage in STAGES},
        }
    last = decisions[-1] if decisions else None
    return {
        "counts": counts,
        "first_start_ms": min((d.start_ms for d in decisions), default=None),
        "last_start_ms": max((d.start_ms for d in decisions), default=None),
        "symbols": sorted({d.symbol for d in decisions}),
        "bars_by_source": dict(sorted(sources.items())),
        "tiers": per_tier,
        "regimes": {name: _pnl(regimes[name]) for name in sorted(regimes)},
        "total": {**_pnl(decisions), "unrealized_pnl_usd_last": last.unrealized_pnl_usd if last else 0.0},
    }


PLOT_HINT: Final = "matplotlib is not installed; pip install 'progdistill[plot]' to draw them"


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (the `plot` extra); the service never needs it."""
    try:
        import matplotlib  # noqa: F401 - only asking whether it is there
    except ImportError:
        return False
    return True


def plot_tier(name: str, decisions: list[ReportRow], out_png: Path) -> None:
    """Histogram (log-spaced bins) and empirical CDF of each latency stage for one tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_hist, ax_cdf) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        for stage in STAGES:
            vals = _stage_values(decisions, stage)
            vals = vals[vals > 0]
            if vals.size == 0:
                continue
            lo, hi = max(float(vals.min()), 0.5), max(float(vals.max()), 1.0)
            bins = np.geomspace(lo, hi * 1.0001, 40) if hi > lo else np.asarray([lo * 0.9, hi * 1.1])
            ax_hist.hist(vals, bins=bins, histtype="step", label=stage)
            xs = np.sort(vals)
            ax_cdf.step(xs, np.arange(1, xs.size + 1) / xs.size, where="post", label=stage)
        for ax in (ax_hist, ax_cdf):
            ax.set_xscale("log")
            ax.set_xlabel("latency (us)")
            ax.grid(True, which="both", alpha=0.3)
        ax_hist.set_ylabel("bars")
        ax_cdf.set_ylabel("fraction of bars")
        ax_cdf.legend(fontsize=8, loc="lower right")
        fig.suptitle(f"tier {name}: {len(decisions)} bars")
        fig.tight_layout()
        fig.savefig(out_png, dpi=90)
    finally:
        plt.close(fig)


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: one row per tier with bars, PnL and p50/p90/p99/max of inference and total."""
    head = f"{'tier':<12}{'bars':>7}{'pnl_usd':>11}{'fee_usd':>10}"
    cols = [(stage, q) for stage in ("inference", "total", "recv_to_decision") for q in ("p50", "p99", "max")]
    short = {"inference": "inf", "total": "tot", "recv_to_decision": "recv"}
    head += "".join(f"{short[s] + '_' + q:>11}" for s, q in cols)
    lines = [head, "-" * len(head)]
    for name, t in report["tiers"].items():
        row = f"{name:<12}{t['bars']:>7}{t['realized_pnl_usd']:>11.2f}{t['fee_usd']:>10.2f}"
        for stage, q in cols:
            s = t["latency_us"][stage]
            row += f"{s[q]:>11.0f}" if s else f"{'-':>11}"
        lines.append(row)
    c = report["counts"]
    lines.append(
        f"{c['decisions']} decisions from {c['lines']} lines; {c['other_events']} other events, "
        f"{c['malformed']} malformed, {c['duplicates']} duplicates (latency in us)"
    )
    for name, r in report["regimes"].items():
        lines.append(f"  regime {name:<11} bars {r['bars']:>7}  pnl_usd {r['realized_pnl_usd']:>10.2f}")
    for m in report.get("models", []):
        skill = m.get("return_skill")
        text = msgspec.convert(skill, ReturnSkill).text() if skill else f"unknown: {m['note']}"
        lines.append(f"  model {m['model_sha'][:12] or '?'} ({m['bars']} bars): return head {text}")
    return "\n".join(lines)


def model_skills(decisions: list[ReportRow], models_dir: str | Path | None) -> list[dict[str, Any]]:
    """Per `model_sha` the log names (first seen first): its bars, and the return head's measured skill from
    the manifest with that sha256 under `models_dir` (the family itself, or a models store's versions).

    Each entry: `model_sha`, `bars`, `manifest` (path or None), `return_skill` (the manifest's, or None) and
    `note` saying why there is no skill to show (no `--models`, no such manifest, an older manifest)."""
    bars = Counter(d.model_sha for d in decisions)
    found: dict[str, tuple[Path, Manifest]] = {}
    if models_dir is not None:
        root = Path(models_dir)
        for path in [root / MANIFEST_NAME, *sorted(root.glob(f"*/{MANIFEST_NAME}"))]:
            try:
                raw = path.read_bytes()
                found.setdefault(hashlib.sha256(raw).hexdigest(), (path, decode_manifest(raw, path=path)))
            except (OSError, ModelError):
                continue
    out: list[dict[str, Any]] = []
    for sha, n in bars.items():
        entry: dict[str, Any] = {"model_sha": sha, "bars": n, "manifest": None, "return_skill": None}
        if not sha:
            entry["note"] = "decision lines without model_sha (an older log): the family is unknown"
        elif models_dir is None:
            entry["note"] = "manifest not looked up: pass --models DIR (the models directory)"
        elif sha not in found:
            entry["note"] = f"no manifest with this sha256 under {models_dir}"
        else:
            path, manifest = found[sha]
            entry["manifest"] = str(path)
            skill = manifest.return_skill
            entry["return_skill"] = None if skill is None else msgspec.to_builtins(skill)
            entry["no_skill"] = None if skill is None else skill.no_skill
            entry["note"] = "" if skill is not None else "older manifest: return skill not measured"
        out.append(entry)
    return out


def run_report(
    log_path: str | Path,
    out_dir: str | Path,
    *,
    plots: bool = True,
    models_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Read the log, write `report.json` (and a PNG per tier when `plots`) to `out_dir`; return the report.

    `models_dir`: where to find the manifests of the log's `model_sha`s (`model_skills`); None: not looked
    up, and the report says so."""
    stage = StagedOutput(out_dir, kind="latency-report", protect=[log_path])
    stage.check()  # before reading: refuse an --out this command must not replace
    decisions, counts = read_decisions(log_path)
    report = build_report(decisions, counts)
    report["models"] = model_skills(decisions, models_dir)
    with stage as out:
        _write_report(report, decisions, log_path, out, plots=plots)
        stage.commit()
    return report


def _write_report(
    report: dict[str, Any], decisions: list[ReportRow], log_path: str | Path, out: Path, *, plots: bool
) -> None:
    report["source_log"] = str(log_path)
    report["plots"] = {}
    if plots and not matplotlib_available():
        print(f"latency-report: plots skipped: {PLOT_HINT}")
        plots = False
    if plots:
        by_tier: dict[str, list[ReportRow]] = defaultdict(list)
        for d in decisions:
            by_tier[d.tier].append(d)
        for name, rows in sorted(by_tier.items()):
            png = out / f"latency_{name}.png"
            plot_tier(name, rows, png)
            report["plots"][name] = png.name
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def add_report_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of the `latency-report` subcommand."""
    parser.add_argument("log", type=Path, help="JSONL decision log (logging.decisions_path)")
    parser.add_argument("--out", type=Path, default=Path("reports/latency"), help="output directory")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="models directory (a family or a models store) holding the manifests of the log's model_sha: "
        "shows the return head's measured skill",
    )


def main_report(args: argparse.Namespace) -> int:
    """Run the subcommand: print the table, write the files; 0 on success, 2 (reason on stderr) when the
    log is unreadable or holds no decision, or `--out` must not be replaced."""
    try:
        report = run_report(args.log, args.out, plots=not args.no_plots, models_dir=args.models)
    except (ReportError, OutputPathError) as exc:
        print(f"latency-report: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"wrote {Path(args.out) / 'report.json'}")
    return 0
