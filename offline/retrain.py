"""`python -m offline retrain`: the nightly champion/challenger retrain of the tier family.

One run:

1. resolve a `[market] symbols` selection on the exchange as the service does (`resolve_selection`), then
   fetch the last `[retrain] history_bars` confirmed bars of every `[market] symbol` over REST
   (`[exchange] rest_url`, `offline.fetch.fetch_history`), plus the bars the service recorded in its
   ledger (`[ledger] path`, `offline.recorded`) that REST did not return (`merge_recorded`);
2. hold out the most recent `holdout_bars` of each symbol, and distil a challenger on the bars before them
   (several symbols: one pooled family) into a new, unpromoted version of the models store
   (`pipeline_distill` with `promote=False`; or take an existing version with `--challenger`);
3. verify the challenger exactly as the service does at start-up (manifest, hashes, fit to the config);
4. score challenger and champion (the `current` version) on the same held-out bars through the real
   per-bar engine (features, regime detection with each family's calibration, routing): per tier and for
   the routed forecast, the return IC (Spearman) and the vol head's QLIKE, bias-corrected with a variance
   scale fitted on the bars just before the window whose targets end before it (`offline.vol`);
5. promote the challenger (atomic swap of `current`, `bot.models.store.promote`) only if it wins (`decide`),
   and write its report (`retrain.json`, `retrain.txt`) into its version directory and a
   `retrain-<UTC time>.json` summary into `[retrain] reports_dir`, whatever the outcome;
6. prune the store to the newest `[retrain] keep_versions` versions (`prune_store`; never `current` nor
   the version before it).

The champion's version and `current` are never modified: a failure at any step leaves them as they were.
Exit codes (docs/errors.md): 0 promoted or kept (the last line says which), 2 bad config or arguments,
3 the fetch failed, 4 the challenger failed (distil, export, verification or scoring).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from bot.config import Config
from bot.core.bars import Bar
from bot.core.errors import BotError, ConfigError, ModelError
from bot.interrupts import deferred
from bot.models import store as modelstore
from bot.models.family import TierFamily
from bot.models.manifest import MANIFEST_NAME
from bot.outputs import OutputPathError
from offline import interrupts
from offline.export import write_json
from offline.holdout import decide, fmt, score_family
from offline.interrupts import Interrupted
from offline.retrain_fetch import (
    EXIT_FETCH,
    FetchFailedError,
    fetch_series,
    merge_recorded,
    resolve_selection,
)

EXIT_CHALLENGER: Final = 4
REPORT_JSON: Final = "retrain.json"
REPORT_TXT: Final = "retrain.txt"


class ChallengerFailedError(BotError):
    """The challenger could not be distilled, exported, verified or scored: exit 4."""

    exit_code = EXIT_CHALLENGER


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a retrain run did: `promoted` (the challenger is current now) and the one-line verdict."""

    promoted: bool
    challenger: str
    champion: str | None
    verdict: str
    report: dict[str, Any]


# ---- the run -------------------------------------------------------------------------------------------


def _verified(path: Path, cfg: Config) -> TierFamily:
    family = TierFamily.load(path)
    family.check_fit(cfg)
    return family


def _champion(models: Path, cfg: Config) -> tuple[str | None, TierFamily | None, str | None]:
    """(name, family, why unusable): name None when there is no champion yet."""
    pointer = models / modelstore.CURRENT
    if pointer.is_symlink() or pointer.exists():
        name = modelstore.current_version(models) or modelstore.CURRENT
    elif (models / MANIFEST_NAME).is_file():
        name = "(plain family)"
    else:
        return None, None, None
    try:
        return name, _verified(models, cfg), None
    except (ModelError, OSError) as exc:
        return name, None, str(exc)


def _distill_challenger(
    cfg: Config, series: Mapping[str, Sequence[Bar]], store: Path, work: Path, log: Callable[[str], None]
) -> str:
    """Distil a challenger on every symbol's bars before the held-out window (one symbol: that CSV; several:
    one pooled family, `offline.data.load_pooled`); returns its version."""
    from offline.fetch import write_klines_csv
    from offline.pipeline import pipeline_distill

    csvs: list[Path] = []
    for symbol, bars in series.items():
        train = list(bars[: -cfg.retrain.holdout_bars])
        csvs.append(work / f"{symbol}_{cfg.market.interval}m.csv")
        write_klines_csv(train, csvs[-1])
        log(f"retrain: {symbol}: {len(train)} bars to distil on ({train[0].start_ms}..{train[-1].start_ms})")
    symbols = list(series)
    try:
        report = pipeline_distill(
            cfg,
            data=csvs[0] if len(csvs) == 1 else csvs,
            out_dir=store,
            symbol=symbols[0] if len(symbols) == 1 else symbols,
            allow_gaps=True,
            versioned=True,
            promote=False,
            log=log,
        )
    except OutputPathError:
        raise
    except BotError as exc:
        raise ChallengerFailedError(f"distilling the challenger failed: {exc}") from exc
    version: str = report["version"]
    readable_by_others(store / version)
    return version


def readable_by_others(version_dir: Path) -> None:
    """Give the version directory the mode the umask allows (it is staged 0700 by `tempfile`): the bot, under
    systemd a different user, must read it (progdistill-retrain.service sets UMask=0022, so 0755)."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(version_dir, 0o777 & ~mask)


def check_store(models: Path, *, dry_run: bool) -> None:
    """Refuse a models directory that cannot take a version, before any work (exit 2)."""
    from offline.pipeline import store_reason

    why = store_reason(models)
    if why is not None:
        raise OutputPathError(f"--models {models}: {why}; nothing was touched; choose a models directory")
    if not dry_run and models.exists() and not os.access(models, os.W_OK | os.X_OK):
        raise OutputPathError(f"--models {models}: not writable by this user; nothing was touched")


def retrain(
    cfg: Config,
    *,
    models: Path,
    dry_run: bool = False,
    challenger: str | None = None,
    end_ms: int | None = None,
    ledger: str | Path | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    now: dt.datetime | None = None,
) -> Outcome:
    """One champion/challenger round (module docstring). With `dry_run` nothing is written anywhere: the
    challenger is distilled into a temporary store and nothing is promoted. `ledger`: the ledger whose
    recorded bars are merged (default `[ledger] path`; the retrain unit passes a `snapshot-ledger` copy).

    Raises:
        ConfigError: bad arguments or an unusable models / reports directory (exit 2).
        FetchFailedError, ChallengerFailedError: exit 3 / 4; the champion and `current` are untouched.
    """
    started = now or dt.datetime.now(dt.UTC)
    if ledger is not None:
        cfg = msgspec.structs.replace(cfg, ledger=msgspec.structs.replace(cfg.ledger, path=str(ledger)))
    stamp = f"{started:%Y%m%dT%H%M%S}.{started.microsecond // 1000:03d}Z"
    check_store(models, dry_run=dry_run)
    reports = Path(cfg.retrain.reports_dir)
    if challenger is not None and challenger not in modelstore.versions(models):
        raise ConfigError(
            f"--challenger {challenger}: not a version in {models} (one of {modelstore.versions(models)})"
        )
    if challenger is not None and challenger == modelstore.current_version(models):
        raise ConfigError(f"--challenger {challenger}: is the current version already; nothing to compare")
    summary: dict[str, Any] = {"started": stamp, "models": str(models), "dry_run": dry_run}
    if not dry_run:
        try:
            reports.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"$.retrain.reports_dir: cannot create {reports}: {exc.strerror}") from exc
    with tempfile.TemporaryDirectory(prefix="progdistill-retrain-") as tmp:
        work = Path(tmp)
        try:
            outcome = _run(cfg, models, work, challenger, dry_run, end_ms, log, summary)
        except (FetchFailedError, ChallengerFailedError) as exc:
            summary.update(outcome="failed", error=str(exc), exit_code=exc.exit_code)
            if not dry_run:
                _write_atomic(reports / f"retrain-{stamp}.json", summary)
            raise
    if not dry_run:
        outcome.report["pruned"] = prune_store(models, cfg.retrain.keep_versions, log=log)
        _write_atomic(reports / f"retrain-{stamp}.json", outcome.report)
    return outcome


def prune_store(models: Path, keep: int, *, log: Callable[[str], None]) -> dict[str, Any]:
    """After a run that wrote to the store: keep the newest `[retrain] keep_versions` versions (and always
    `current` and the previous one, `bot.models.store.prune`). A failure to delete is logged and reported in
    the summary (`error`), not raised: the verdict of the run stands."""
    try:
        deleted = modelstore.prune(models, keep)
    except OSError as exc:
        log(f"retrain: pruning {models} to {keep} versions failed: {exc}; the next run tries again")
        return {"keep": keep, "deleted": [], "error": str(exc)}
    if deleted:
        log(f"retrain: pruned {len(deleted)} old version(s) (keep_versions = {keep}): {', '.join(deleted)}")
    return {"keep": keep, "deleted": deleted}


def _run(
    cfg: Config,
    models: Path,
    work: Path,
    challenger: str | None,
    dry_run: bool,
    end_ms: int | None,
    log: Callable[[str], None],
    summary: dict[str, Any],
) -> Outcome:
    interrupts.phase("data", f"fetching bars from {cfg.exchange.rest_url}")
    if cfg.market.selection is not None:
        summary["selection"] = msgspec.to_builtins(cfg.market.selection)
        cfg = resolve_selection(cfg, log)  # from here on, [market] symbols is the resolved list
    series = fetch_series(cfg, end_ms=end_ms)
    summary["recorded"] = merge_recorded(cfg, series)
    if "skipped" in summary["recorded"]:
        log(f"retrain: REST bars only ({summary['recorded']['skipped']}: {summary['recorded']['ledger']})")
    hold = cfg.retrain.holdout_bars
    summary["window"] = {
        s: {"first_ms": b[0].start_ms, "holdout_from_ms": b[-hold].start_ms, "last_ms": b[-1].start_ms}
        for s, b in series.items()
    }
    log(f"retrain: fetched {', '.join(f'{s} {len(b)} bars' for s, b in series.items())}")
    store = work / "models" if dry_run else models
    if challenger is None:
        existed = store.exists()
        challenger = _distill_challenger(cfg, series, store, work, log)
        ch_dir = store / challenger
        try:
            return _judge(cfg, models, ch_dir, challenger, series, dry_run, summary, log)
        except Interrupted:
            if modelstore.current_version(store) != challenger:  # stopped before a promotion:
                shutil.rmtree(ch_dir)  # leave the store as it was found
                if not existed and not any(store.iterdir()):
                    store.rmdir()  # this run's distillation created it
            raise
    return _judge(cfg, models, models / challenger, challenger, series, dry_run, summary, log)


def _judge(
    cfg: Config,
    models: Path,
    ch_dir: Path,
    challenger: str,
    series: dict[str, list[Bar]],
    dry_run: bool,
    summary: dict[str, Any],
    log: Callable[[str], None],
) -> Outcome:
    """Verify and score the challenger and the champion, promote a winner, write the reports."""
    summary["challenger"] = challenger
    try:
        ch_family = _verified(ch_dir, cfg)
    except (ModelError, OSError) as exc:
        raise ChallengerFailedError(f"challenger {challenger} refused: {exc}") from exc
    champ_name, champ_family, champ_bad = _champion(models, cfg)
    summary["champion"] = champ_name
    interrupts.phase("scoring", f"scoring challenger {challenger}")
    log(f"retrain: scoring challenger {challenger} on the held-out bars")
    try:
        ch_scores = score_family(ch_family, cfg, series)
    except (ValueError, ModelError) as exc:
        raise ChallengerFailedError(f"scoring challenger {challenger} failed: {exc}") from exc
    summary["challenger_scores"] = ch_scores
    champ_scores: dict[str, Any] = {}
    if champ_family is not None:
        interrupts.doing(f"scoring champion {champ_name}")
        log(f"retrain: scoring champion {champ_name} on the held-out bars")
        try:
            champ_scores = score_family(champ_family, cfg, series)
        except (ValueError, ModelError) as exc:  # e.g. no finite vol forecast: it cannot be compared
            champ_family, champ_bad = None, f"cannot be scored: {exc}"
    if champ_family is None:
        promote = True
        reasons = [
            "no champion yet" if champ_name is None else f"champion {champ_name} unusable: {champ_bad}"
        ]
    else:
        summary["champion_scores"] = champ_scores
        trained_to = champ_family.manifest.provenance.get("last_start_ms")
        summary["champion_trained_to_ms"] = trained_to
        # Scored on bars it trained on, the champion is favoured (the comparison stays conservative).
        summary["champion_saw_holdout"] = isinstance(trained_to, int) and trained_to >= min(
            w["holdout_from_ms"] for w in summary["window"].values()
        )
        promote, reasons = decide(champ_scores, ch_scores, cfg)
    summary["rule"] = {
        "min_improvement": cfg.retrain.min_improvement,
        "qlike_tolerance": cfg.retrain.qlike_tolerance,
        "ic_tolerance": cfg.retrain.ic_tolerance,
    }
    summary["reasons"] = reasons
    summary["outcome"] = "promoted" if promote else "kept"
    if dry_run:
        verdict = (
            f"dry run: would {'promote challenger' if promote else 'keep champion'} "
            f"({reasons[0]}); nothing written"
        )
        summary["verdict"] = verdict
        return Outcome(promote, challenger, champ_name, verdict, summary)
    if promote:
        verdict = f"promoted {challenger} (was {champ_name or 'none'}): {reasons[0]}"
    else:
        verdict = f"kept champion {champ_name}; challenger {challenger} not promoted: {'; '.join(reasons)}"
    summary["verdict"] = verdict
    _write_atomic(ch_dir / REPORT_JSON, summary)
    _write_text_atomic(ch_dir / REPORT_TXT, format_report(summary) + "\n")
    if promote:
        interrupts.phase("promote", f"promoting {challenger}")
        cur, prev = modelstore.current_version(models), modelstore.previous_version(models)
        try:
            with deferred():  # a signal meanwhile undoes the promote (below)
                modelstore.promote(models, challenger)
        except (ModelError, OSError) as exc:
            raise ChallengerFailedError(f"promoting {challenger} failed: {exc}") from exc
        except Interrupted:
            modelstore.restore_pointers(models, cur, prev)
            raise
    return Outcome(promote, challenger, champ_name, verdict, summary)


# ---- reports -------------------------------------------------------------------------------------------


def format_report(summary: Mapping[str, Any]) -> str:
    """The text report: per tier and routed, champion vs challenger IC and bias-corrected vol QLIKE."""
    ch = summary.get("challenger_scores", {})
    cp = summary.get("champion_scores", {})
    lines = [
        f"retrain {summary['started']}: challenger {summary.get('challenger')} vs champion "
        f"{summary.get('champion') or 'none'}",
        "held-out rows: " + ", ".join(f"{s} {n}" for s, n in ch.get("holdout_rows", {}).items()),
        f"{'':12} {'IC chall':>10} {'IC champ':>10} {'QLIKE chall':>12} {'QLIKE champ':>12}",
    ]
    names = ["routed", *ch.get("tiers", {})]
    for name in names:
        a = ch["routed"] if name == "routed" else ch["tiers"][name]
        b = (cp.get("routed") if name == "routed" else cp.get("tiers", {}).get(name)) or {}
        lines.append(
            f"{name:12} {fmt(a.get('ic')):>10} {fmt(b.get('ic')):>10} "
            f"{fmt(a.get('vol_qlike_bc')):>12} {fmt(b.get('vol_qlike_bc')):>12}"
        )
    for who, sc in (("challenger", ch), ("champion", cp)):
        if sc.get("routes"):
            lines.append(f"{who} routes: " + ", ".join(f"{k} -> {v}" for k, v in sc["routes"].items()))
    lines += [f"- {r}" for r in summary.get("reasons", [])]
    lines.append(str(summary.get("verdict", "")))
    return "\n".join(lines)


def _write_atomic(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_json(tmp, obj)
    os.replace(tmp, path)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = [
    "EXIT_CHALLENGER",
    "EXIT_FETCH",
    "ChallengerFailedError",
    "FetchFailedError",
    "Outcome",
    "fetch_series",
    "format_report",
    "merge_recorded",
    "prune_store",
    "resolve_selection",
    "retrain",
]
