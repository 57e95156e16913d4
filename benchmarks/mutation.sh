#!/usr/bin/env bash
# Mutation testing of the bar stream (bot/core/stream.py) and the paper trader (bot/core/paper.py).
#
# Not part of CI: it takes minutes (about 5 on 2 shared cores). Configuration: [tool.mutmut] in
# pyproject.toml; what the scores mean and which survivors are equivalent: docs/mutation.md.
#
#   benchmarks/mutation.sh              # fresh run, 2 workers, prints the per-module scores and survivors
#   MAX_CHILDREN=1 benchmarks/mutation.sh
#   benchmarks/mutation.sh --report     # only summarise the last run in ./mutants/
#
# mutmut copies bot/ and tests/ into ./mutants/ (git-ignored) and runs from there; the run is fresh each time
# (mutmut's cache is keyed on function bodies and would keep verdicts of tests that have since changed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ "${1:-}" != "--report" ]]; then
    rm -rf mutants
    log=$(mktemp)
    if ! "$PY" -m mutmut run --max-children "${MAX_CHILDREN:-2}" >"$log" 2>&1; then
        tail -c 2000 "$log" >&2
        echo "mutmut run failed (log: $log)" >&2
        exit 1
    fi
    rm -f "$log"
fi
"$PY" -m mutmut results --all true 2>/dev/null | "$PY" -c '
import collections, sys
counts = collections.Counter()
left = []
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if not name:
        continue
    module = name.split(".x")[0]
    counts[module, status] += 1
    if status not in ("killed", "timeout"):
        left.append(f"  {status:9} {name}")
for module in sorted({m for m, _ in counts}):
    total = sum(n for (m, _), n in counts.items() if m == module)
    killed = counts[module, "killed"] + counts[module, "timeout"]
    print(f"{module}: {killed}/{total} killed = {100 * killed / total:.1f}%")
print("not killed (docs/mutation.md lists the equivalent ones):")
print("\n".join(left) or "  none")
'
