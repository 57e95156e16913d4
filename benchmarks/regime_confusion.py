"""Regime detector vs the synthetic market's true regimes: confusion matrix, agreement, switch counts.

Calibrates on one seed (training) and detects on another (unseen), with bars only and with the book on.

    .venv/bin/python benchmarks/regime_confusion.py [--train 20000] [--test 5000]
    .venv/bin/python benchmarks/regime_confusion.py --smoke     # 3,000 + 1,000 bars: proves it runs
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

from _smoke import SMOKE_HELP  # benchmarks/, beside this script

from bot.core.params import GUESSED_ROUTES, REGIME_NAMES, RegimeConfig
from bot.core.regime import RegimeDetector
from bot.sim.synthetic import SyntheticMarket
from offline.calibrate import calibrate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=20_000)
    ap.add_argument("--test", type=int, default=5_000)
    ap.add_argument("--train-seed", type=int, default=7)
    ap.add_argument("--test-seed", type=int, default=101)
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP}: 3,000 training and 1,000 test bars")
    args = ap.parse_args()
    if args.smoke:
        args.train, args.test = 3_000, 1_000
    cfg = RegimeConfig(routes=GUESSED_ROUTES)  # the regimes are measured; any full route table serves
    cal = calibrate([s.bar for s in SyntheticMarket(seed=args.train_seed).generate(args.train)], cfg)
    print("thresholds", {k: round(v, 6) for k, v in cal["thresholds"].items()})
    test = SyntheticMarket(seed=args.test_seed).generate(args.test)
    true_changes = sum(a.regime != b.regime for a, b in itertools.pairwise(test))
    for use_book in (False, True):
        det = RegimeDetector(cal, cfg)
        conf: Counter[tuple[str, str]] = Counter()
        changes = 0
        for s in test:
            if use_book:
                det.update_book(s.book)
            d = det.update(s.bar)
            changes += d.changed
            if d.warm:
                conf[(s.regime, d.regime)] += 1
        total = sum(conf.values())
        agree = sum(conf[(r, r)] for r in REGIME_NAMES) / total
        chance = max(sum(v for (t, _), v in conf.items() if t == r) for r in REGIME_NAMES) / total
        label = "bars + book" if use_book else "bars only"
        print(
            f"\n{label}: agreement {agree:.3f} (majority-class chance {chance:.3f}); "
            f"switches {changes} (true {true_changes})"
        )
        print("true/detected".ljust(16) + "".join(f"{r:>12s}" for r in REGIME_NAMES))
        for r in REGIME_NAMES:
            print(f"{r:16s}" + "".join(f"{conf[(r, p)]:12d}" for p in REGIME_NAMES))


if __name__ == "__main__":
    main()
