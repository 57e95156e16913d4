"""`python -m offline models list|promote|prune`: list, promote (roll back) and prune the versions of a
models store (`bot.models.store`). The parser and the other subcommands: `offline.__main__`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot.config import load_config
from bot.core.errors import ConfigError

EXIT_MODEL = 3  # `models promote`: a version that fails verification (the bot's exit code for it)
EXIT_IO = 1  # `models prune|promote`: the filesystem refused a rename or a removal


def _models_dir(args: argparse.Namespace, *, changes: bool) -> Path:
    """`--dir`, checked; a broken `current` is one warning line on stderr (`list`) or refused (`promote`,
    `prune`: they would re-point or keep the wrong version)."""
    from bot.models import store as modelstore

    root = Path(args.dir)
    args.out = str(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "no such directory"
        raise ConfigError(f"--dir {root}: {what}; pass the models directory ([models] dir)")
    broken = modelstore.pointer_problem(root)
    if broken is not None and changes:
        raise ConfigError(f"--dir {root}: {broken}; nothing was changed")
    warning = broken or modelstore.dangling_current(root)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)
    return root


def _age(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"


def cmd_models_list(args: argparse.Namespace) -> int:
    import json

    from bot.models import store as modelstore

    root = _models_dir(args, changes=False)
    rows = modelstore.describe(root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        plain = (root / modelstore.MANIFEST).is_file()
        print(f"no versions in {root}" + (" (a plain family: manifest.json at the top)" if plain else ""))
        return 0
    width = max(len(r["version"]) for r in rows)
    for r in rows:
        mark = "current" if r["current"] else "previous" if r["previous"] else ""
        sha = (r["manifest_sha256"] or "-")[:12]
        head = f"{r['version']:<{width}}  {mark:<8}  {_age(r['age_s']):>6}  {sha:<12}"
        if r["error"] is not None:
            print(f"{head}  unreadable: {r['error']}")
            continue
        symbols = ",".join(r["symbols"]) if r["symbols"] else "-"
        verdict = f"  retrain: {r['retrain']['outcome']}" if r["retrain"] else ""
        print(f"{head}  tiers {','.join(r['tiers'])}  symbols {symbols}{verdict}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from bot.core.errors import ModelError
    from bot.models import store as modelstore
    from bot.models.family import TierFamily

    root = _models_dir(args, changes=True)
    known = modelstore.versions(root)
    if args.version not in known:
        recent = ", ".join(known[-5:]) or "none"
        raise ConfigError(
            f"promote {args.version}: not a version in {root} (newest: {recent}); see `models list`"
        )
    cfg = load_config(args.config) if args.config is not None else None
    current = modelstore.current_version(root)
    try:
        family = TierFamily.load(root / args.version)  # manifest, feature version, every tier's sha256, ONNX
        if cfg is not None:
            family.check_fit(cfg)
    except ModelError as exc:
        print(
            f"error: {args.version} refused: {exc}; current is unchanged ({current or 'none'})",
            file=sys.stderr,
        )
        return EXIT_MODEL
    if current == args.version:
        print(f"{args.version} is current already; nothing changed")
        return 0
    try:
        modelstore.promote(root, args.version)
    except OSError as exc:
        print(f"error: promoting {args.version} failed: {exc}; current is unchanged", file=sys.stderr)
        return EXIT_IO
    poll = cfg.models.reload_poll_s if cfg is not None else None
    when = (
        "on SIGHUP only ([models] reload_poll_s = 0)"
        if poll == 0
        else f"within [models] reload_poll_s ({'5 s by default' if poll is None else f'{poll:g} s'})"
    )
    print(f"promoted {args.version} (was {current or 'none'}; sha {family.model_sha[:12]})")
    print(
        f"the running bot loads, verifies and warms it {when} or at once on `systemctl reload progdistill`, "
        "and switches at the next bar (model_switched in its log)"
    )
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    from bot.models import store as modelstore

    root = _models_dir(args, changes=True)
    if args.keep < 1:
        raise ConfigError(f"--keep: expected at least 1 version to keep, got {args.keep}")
    before = len(modelstore.versions(root))
    try:
        names = modelstore.prune(root, args.keep, dry_run=args.dry_run)
    except OSError as exc:
        print(f"error: pruning {root} failed: {exc}; fix and run prune again", file=sys.stderr)
        return EXIT_IO
    verb = "would delete" if args.dry_run else "deleted"
    for name in names:
        print(f"{verb} {name}")
    print(
        f"{verb} {len(names)} version(s); {before - len(names)} left "
        f"(the newest {args.keep}, and always current and the one before it)"
    )
    return 0
